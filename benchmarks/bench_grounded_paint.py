"""Which painting rule makes the best Grounded-SAM label maps? Measured on real VOC geometry.

No Grounding DINO or SAM weights exist here, so detections are simulated from the real
PASCAL VOC 2012 train ground truth (../shared/data/voc2012_train/gt, 1464 maps): every
connected region of a class (>= 50 px) is one detected object whose "SAM mask" is the region
with boundary noise (dilated or eroded 0-3 px) and, with probability ``--bleed``, the other
objects lying inside its box added (what box-prompted SAM does to a rider in a horse's box
or a bottle on a table); with probability ``--confuse`` a rival detection of another tag of
the image on the same (re-noised) mask, scored lower on average; objects are missed with
probability ``--miss``; detection order is random, as query order is. Scores: true objects
U(0.35, 0.9), rivals U(0.3, 0.6).

Prints the pooled mIoU (21 classes, 255 ignored) of each rule, and the painting time of each
rule relative to the reference rule in the same process. The figures depend on this noise
model: they rank the rules under it, they are not Grounded-SAM's accuracy.

    python benchmarks/bench_grounded_paint.py [--limit N] [--seed S]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sepl.grounded.labelmap import paint_label_map  # noqa: E402
from sepl.labelio import read_label  # noqa: E402
from sepl.paths import voc_train_dir  # noqa: E402

RULES = {
    "reference": dict(rule="reference"),
    "score": dict(rule="score"),
    "area (no dedup)": dict(rule="area", dedup_iou=None),
    "area + dedup 0.8 (default)": dict(rule="area", dedup_iou=0.8),
    "area + dedup + ignore conflicts": dict(rule="area", dedup_iou=0.8, ignore_conflicts=True),
}


def simulate(gt: np.ndarray, rng: np.random.Generator, bleed: float, confuse: float, miss: float):
    h, w = gt.shape
    fg = (gt > 0) & (gt < 255)
    present = [int(c) for c in np.unique(gt) if 0 < c < 255]
    masks, classes, scores = [], [], []

    def noisy(m):
        r = int(rng.integers(0, 4))
        if r:
            k = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
            m = (cv2.dilate if rng.random() < 0.5 else cv2.erode)(m.astype(np.uint8), k) > 0
        return m

    for c in present:
        n, comp = cv2.connectedComponents((gt == c).astype(np.uint8), connectivity=8)
        for j in range(1, n):
            region = comp == j
            if region.sum() < 50 or rng.random() < miss:
                continue
            ys, xs = np.nonzero(region)
            m = region.copy()
            if rng.random() < bleed:
                box = np.zeros_like(m)
                box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
                m |= box & fg & (gt != c)
            masks.append(noisy(m)); classes.append(c); scores.append(rng.uniform(0.35, 0.9))
            others = [o for o in present if o != c]
            if others and rng.random() < confuse:
                masks.append(noisy(m)); classes.append(int(rng.choice(others))); scores.append(rng.uniform(0.3, 0.6))
    if not masks:
        return np.zeros((0, h, w), bool), np.zeros(0, np.int64), np.zeros(0)
    order = rng.permutation(len(masks))
    return np.stack(masks)[order], np.array(classes)[order], np.array(scores)[order]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bleed", type=float, default=0.5)
    ap.add_argument("--confuse", type=float, default=0.2)
    ap.add_argument("--miss", type=float, default=0.1)
    args = ap.parse_args()
    root = voc_train_dir()
    if root is None:
        sys.exit("../shared/data/voc2012_train is not present")
    ids = (root / "train.txt").read_text().split()[: args.limit]
    rng = np.random.default_rng(args.seed)
    conf = {k: np.zeros((21, 21), np.int64) for k in RULES}
    times = {k: 0.0 for k in RULES}
    ignored = {k: 0 for k in RULES}
    valid_px = 0
    for sid in ids:
        gt = read_label(root / "gt" / f"{sid}.png")
        masks, classes, scores = simulate(gt, rng, args.bleed, args.confuse, args.miss)
        valid = gt != 255
        valid_px += int(valid.sum())
        for name, kw in RULES.items():
            t = time.perf_counter()
            pred = paint_label_map(masks, classes, scores, shape=gt.shape, **kw)
            times[name] += time.perf_counter() - t
            keep = valid & (pred != 255)
            ignored[name] += int((valid & (pred == 255)).sum())
            conf[name] += np.bincount(gt[keep].astype(np.int64) * 21 + pred[keep], minlength=441).reshape(21, 21)
    print(f"{len(ids)} VOC train GT maps, bleed={args.bleed} confuse={args.confuse} miss={args.miss} seed={args.seed}")
    print(f"{'rule':34s} {'mIoU':>6s} {'ignored px':>10s} {'time vs reference':>18s}")
    for name in RULES:
        m = conf[name]
        iou = np.diag(m) / np.maximum(m.sum(0) + m.sum(1) - np.diag(m), 1)
        print(f"{name:34s} {100 * iou.mean():6.2f} {100 * ignored[name] / valid_px:9.2f}% "
              f"{times[name] / times['reference']:17.2f}x")


if __name__ == "__main__":
    main()
