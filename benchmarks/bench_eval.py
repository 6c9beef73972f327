"""Speed of ``sepl eval`` over the 1464 VOC 2012 train pairs (TransCAM vs GT).

Runs, in one process on the same files: the evaluator behind ``sepl eval`` (threads + the
uint8 histogram path), and a baseline of the common WSSS evaluation script style (PIL read,
``np.bincount(n * gt[mask] + pred[mask])`` per image, one thread). Both mIoUs are asserted
equal. Also times the whole command (``python -m sepl eval``) in a subprocess.

    python benchmarks/bench_eval.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sepl.cli.eval import evaluate_folders  # noqa: E402
from sepl.paths import voc_train_dir  # noqa: E402


def baseline(pred_dir: Path, gt_dir: Path, ids, n: int = 21) -> float:
    hist = np.zeros((n, n), np.int64)
    for i in ids:
        pred = np.asarray(Image.open(pred_dir / f"{i}.png")).astype(np.int64)
        gt = np.asarray(Image.open(gt_dir / f"{i}.png")).astype(np.int64)
        mask = (gt >= 0) & (gt < n)
        hist += np.bincount(n * gt[mask] + pred[mask], minlength=n * n).reshape(n, n)
    iou = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
    return float(np.nanmean(iou))


def main() -> None:
    root = voc_train_dir()
    if root is None:
        print("../shared/data/voc2012_train not present: nothing to benchmark")
        return
    ids = (root / "train.txt").read_text().split()
    t = time.perf_counter()
    ref = baseline(root / "transcam", root / "gt", ids)
    t_base = time.perf_counter() - t
    t = time.perf_counter()
    cm, _, failures = evaluate_folders(root / "transcam", root / "gt", ids, 21, progress=False)
    t_ours = time.perf_counter() - t
    assert not failures and abs(cm.miou() - ref) < 1e-12, (cm.miou(), ref)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sepl", "eval", "--pred", str(root / "transcam"), "--gt",
                    str(root / "gt"), "--list", str(root / "train.txt"), "--no-progress"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    t_cli = time.perf_counter() - t
    print(f"{len(ids)} pairs, mIoU {cm.miou() * 100:.2f} (baseline {ref * 100:.2f})")
    print(f"sepl evaluator {t_ours:.2f} s | baseline script style {t_base:.2f} s | "
          f"speed-up {t_base / t_ours:.1f}x | whole `sepl eval` command {t_cli:.2f} s wall")


if __name__ == "__main__":
    main()
