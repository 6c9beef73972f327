"""Speed of ``sepl.merge.merge`` (official mode) against the released SEPL procedure.

Same inputs for every contender, outputs asserted identical:

- ``loop``: an in-memory per-class loop port of ``max_iou_imp2.py`` (one pass over the
  unclaimed masks per present class; ``sepl.merge.merge_reference_loop``);
- ``released``: the released procedure itself, reading every mask PNG from the amg.py
  folder once per present class (``os.scandir`` + ``Image.open`` in the inner loop);
- ``sepl``: ``merge(seed, masks, mode="official")`` on the in-memory stack, and
  ``sepl+read``: reading the folder once with ``sepl.amgio`` and then merging.

Seeds: real TransCAM pseudo-labels of size 375x500 from ../shared/data when present (else
generated scenes of that size); masks: 100 per image, object-like (GT regions shifted,
split and merged, ellipses) plus a whole-image mask.

    OMP_NUM_THREADS=1 python benchmarks/bench_merge.py [--images 12] [--masks 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sepl.amgio import read_amg_folder, write_amg_folder  # noqa: E402
from sepl.labelio import read_label  # noqa: E402
from sepl.merge import merge, merge_reference_loop  # noqa: E402
from sepl.paths import voc_train_dir  # noqa: E402

SIZE = (375, 500)


def released_procedure(seed: np.ndarray, folder: str, num_classes: int = 21) -> np.ndarray:
    """The released algorithm with its I/O: every mask PNG is read once per present class."""
    seen = []
    out = np.zeros_like(seed)
    for c in range(1, num_classes):
        pc = seed == c
        if np.sum(pc) == 0:
            continue
        cand = []
        union = np.zeros_like(pc)
        for entry in os.scandir(folder):
            if entry.is_file() and entry.path.endswith("png") and entry.path not in seen:
                m = np.array(Image.open(entry.path)) == 255
                union = np.logical_or(union, m)
                inter = np.sum((pc == m) * pc)
                if 2 * inter - np.sum(m) > 0 or inter / np.sum(pc) >= 0.85:
                    cand.append(m)
                    seen.append(entry.path)
        cand.append(np.logical_and(union == 0, pc == 1))
        out[np.sum(cand, axis=0) > 0] = c
    return out


def object_masks(rng: np.random.Generator, gt: np.ndarray, n: int) -> np.ndarray:
    """n masks of a SAM-like mix: objects (shifted), object halves, pairs merged, blobs, image."""
    h, w = gt.shape
    objs = [gt == c for c in np.unique(gt) if c not in (0, 255)]
    out = [np.ones((h, w), bool), gt == 0]
    for o in objs:
        out.append(np.roll(o, tuple(rng.integers(-6, 7, 2)), axis=(0, 1)))
        ys, xs = np.nonzero(o)
        if ys.size:
            cut = np.median(xs)
            xx = np.arange(w)[None, :]
            out += [o & (xx < cut), o & (xx >= cut)]
    if len(objs) > 1:
        out.append(objs[0] | objs[1])
    yy, xx = np.mgrid[:h, :w]
    while len(out) < n:
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        ry, rx = rng.integers(4, 120, 2)
        out.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1)
    return np.stack(out[:n])


def load_inputs(num_images: int, num_masks: int, rng):
    root = voc_train_dir()
    pairs = []
    if root is not None:
        for sid in (root / "train.txt").read_text().split():
            seed = read_label(root / "transcam" / f"{sid}.png")
            if seed.shape == SIZE:
                gt = read_label(root / "gt" / f"{sid}.png")
                pairs.append((sid, seed, gt))
            if len(pairs) == num_images:
                break
        source = "TransCAM seeds (VOC 2012 train)"
    else:
        from sepl.synth import make_scene

        for k in range(num_images):
            _, gt = make_scene(rng, size=SIZE)
            seed = np.where(gt == 255, 0, gt).astype(np.uint8)
            seed[:, ::4] = 0
            pairs.append((f"synth_{k}", seed, gt))
        source = "generated scenes"
    return [(sid, seed, object_masks(rng, gt, num_masks)) for sid, seed, gt in pairs], source


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--masks", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5, help="best of this many runs per image and contender")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    inputs, source = load_inputs(args.images, args.masks, rng)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for sid, seed, masks in inputs:
            folder = os.path.join(tmp, sid)
            write_amg_folder(folder, masks)
            ours = merge(seed, masks, mode="official", num_classes=21).labels
            assert np.array_equal(ours, merge_reference_loop(seed, masks, 21)), sid
            assert np.array_equal(ours, released_procedure(seed, folder)), sid
            t_sepl = best_time(lambda: merge(seed, masks, mode="official", num_classes=21), args.repeat)
            t_paper = best_time(lambda: merge(seed, masks, mode="paper", num_classes=21), args.repeat)
            t_read = best_time(lambda: merge(seed, read_amg_folder(folder)[0], mode="official", num_classes=21),
                               max(1, args.repeat // 2))
            t_loop = best_time(lambda: merge_reference_loop(seed, masks, 21), max(1, args.repeat // 2))
            t_rel = best_time(lambda: released_procedure(seed, folder), 1)
            ncls = int(((np.unique(seed) > 0) & (np.unique(seed) < 21)).sum())
            rows.append((sid, ncls, t_sepl, t_read, t_loop, t_rel, t_paper))
            print(f"{sid}  classes={ncls}  sepl {t_sepl * 1e3:6.2f} ms  sepl+read {t_read * 1e3:7.1f} ms  "
                  f"loop {t_loop * 1e3:7.1f} ms  released {t_rel * 1e3:7.1f} ms", flush=True)
    tot = [sum(r[i] for r in rows) for i in range(2, 6)]
    print()
    print(f"inputs: {len(rows)} images {SIZE[0]}x{SIZE[1]} from {source}, {args.masks} masks each; "
          f"outputs identical in all three implementations")
    print(f"mean per image: sepl {tot[0] / len(rows) * 1e3:.2f} ms | sepl incl. reading the PNGs once "
          f"{tot[1] / len(rows) * 1e3:.1f} ms | per-class loop {tot[2] / len(rows) * 1e3:.1f} ms | "
          f"released (PNG per class) {tot[3] / len(rows) * 1e3:.1f} ms | "
          f"sepl paper mode {sum(r[6] for r in rows) / len(rows) * 1e3:.2f} ms")
    print(f"speed-up vs in-memory per-class loop: {tot[2] / tot[0]:.1f}x "
          f"(per image: median {statistics.median(r[4] / r[2] for r in rows):.1f}x, "
          f"min {min(r[4] / r[2] for r in rows):.1f}x)")
    print(f"speed-up vs released procedure (reads PNGs per class): {tot[3] / tot[0]:.1f}x in memory, "
          f"{tot[3] / tot[1]:.1f}x when sepl also reads the PNGs (once)")


if __name__ == "__main__":
    main()
