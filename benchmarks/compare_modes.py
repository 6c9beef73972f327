"""Which merge mode gives better pseudo-labels? official vs paper (both fallbacks), measured.

No SAM weights exist here, so the masks are made from the ground truth the way SAM errs:
each object instance (connected component of a GT class) becomes a mask that is shifted,
grown or shrunk by a few pixels, some are split in halves (SAM's parts) and some pairs are
merged; background is cut into a few large pieces; random blobs add clutter. Variant
``+whole`` adds a whole-image mask and one mask of all background (SAM emits such masks),
the case where the released code fails. Seeds are the real TransCAM pseudo-labels.

Scores: dataset mIoU (one confusion matrix, 21 classes) on the chosen ids.

    OMP_NUM_THREADS=1 python benchmarks/compare_modes.py [--images 300]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sepl.labelio import read_label  # noqa: E402
from sepl.merge import merge  # noqa: E402
from sepl.metrics import ConfusionMatrix  # noqa: E402
from sepl.paths import voc_train_dir  # noqa: E402


def sam_like_masks(rng: np.random.Generator, gt: np.ndarray, whole: bool) -> np.ndarray:
    h, w = gt.shape
    k3 = np.ones((3, 3), np.uint8)
    objs = []
    for c in np.unique(gt):
        if c in (0, 255):
            continue
        n, comp = cv2.connectedComponents((gt == c).astype(np.uint8))
        objs += [comp == i for i in range(1, n) if (comp == i).sum() >= 30]
    out = []
    for o in objs:
        m = o.astype(np.uint8)
        r = rng.integers(0, 3)
        if r == 1:
            m = cv2.dilate(m, k3, iterations=int(rng.integers(1, 5)))
        elif r == 2:
            m = cv2.erode(m, k3, iterations=int(rng.integers(1, 4)))
        m = np.roll(m.astype(bool), tuple(rng.integers(-4, 5, 2)), axis=(0, 1))
        out.append(m)
        if rng.random() < 0.5:  # parts
            ys, xs = np.nonzero(o)
            if rng.random() < 0.5:
                cut = np.median(xs)
                part = np.arange(w)[None, :] < cut
            else:
                cut = np.median(ys)
                part = np.arange(h)[:, None] < cut
            out += [o & part, o & ~part]
    for _ in range(min(len(objs) // 2, 3)):  # merged neighbours
        i, j = rng.choice(len(objs), 2, replace=False)
        out.append(objs[i] | objs[j])
    bg = gt == 0
    for _ in range(int(rng.integers(2, 6))):  # big background pieces
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        piece = np.zeros((h, w), bool)
        piece[y0:y0 + int(rng.integers(h // 4, h)), x0:x0 + int(rng.integers(w // 4, w))] = True
        out.append(piece & bg)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(int(rng.integers(5, 20))):  # clutter
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        ry, rx = rng.integers(3, 40, 2)
        out.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1)
    if whole:
        out += [np.ones((h, w), bool), bg | (gt == 255)]
    out = [m for m in out if m.any()]
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    args = ap.parse_args()
    root = voc_train_dir()
    if root is None:
        print("../shared/data/voc2012_train not present")
        return
    ids = (root / "train.txt").read_text().split()
    rng = np.random.default_rng(0)
    ids = sorted(rng.choice(ids, min(args.images, len(ids)), replace=False).tolist())
    configs = {
        "seed (TransCAM)": None,
        "official": dict(mode="official"),
        "paper, fallback=unmasked": dict(mode="paper", fallback="unmasked"),
        "paper, fallback=unselected": dict(mode="paper", fallback="unselected"),
    }
    for whole in (False, True):
        cms = {k: ConfusionMatrix(21) for k in configs}
        for sid in ids:
            seed = read_label(root / "transcam" / f"{sid}.png")
            gt = read_label(root / "gt" / f"{sid}.png")
            masks = sam_like_masks(rng, gt, whole)
            for name, kw in configs.items():
                pred = seed if kw is None else merge(seed, masks, num_classes=21, **kw).labels
                cms[name].update(pred, gt)
        print(f"\n{len(ids)} VOC train images, SAM-like masks {'with' if whole else 'without'} "
              f"whole-image and all-background masks")
        for name, cm in cms.items():
            print(f"  {name:<28} mIoU {cm.miou() * 100:6.2f}")


if __name__ == "__main__":
    main()
