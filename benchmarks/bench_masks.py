"""Automatic SAM masks: sepl's batched pipeline vs stock SamAutomaticMaskGenerator, same
settings, same process; plus the superpixel source's time per image.

    python benchmarks/bench_masks.py                       # tiny SAM on CPU (random weights)
    python benchmarks/bench_masks.py --model-type vit_b --device cuda --image-batch 8
    python benchmarks/bench_masks.py --model-type vit_h --checkpoint sam_vit_h_4b8939.pth --dtype bfloat16

Prints images/s of both, the speed ratio, and how many masks match (IoU >= 0.99 both ways).
Without a checkpoint the weights are random: the architecture's cost is real, the masks are
noise, so the default thresholds are relaxed unless --checkpoint is given.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _images(n: int, size):
    from sepl.paths import voc_train_dir

    ims = []
    d = voc_train_dir()
    if d is not None:
        from sepl.labelio import read_image

        ims = [read_image(p) for p in sorted((d / "images").glob("*.jpg"))]
    from sepl.synth import make_scene

    rng = np.random.default_rng(0)
    while len(ims) < n:
        ims.append(make_scene(rng, size)[0])
    return ims[:n]


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-type", default="tiny")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--image-batch", type=int, default=4)
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--points-per-batch", type=int, default=64, help="stock generator's")
    ap.add_argument("--our-points-per-batch", type=int, default=256)
    ap.add_argument("--skip-superpixels", action="store_true")
    args = ap.parse_args(argv)

    import torch
    from segment_anything import SamAutomaticMaskGenerator

    from sepl.masks.base import matched_fraction
    from sepl.masks.build import build_sam
    from sepl.masks.sam_auto import SamAutoMasks

    torch.set_grad_enabled(False)
    sam = build_sam(args.model_type, args.checkpoint, device=args.device,
                    random_weights=args.checkpoint is None)  # a speed run: random weights are fine, and said
    dev = sam.device
    if args.checkpoint:
        kw = dict(points_per_side=args.points_per_side)  # SAM's defaults otherwise
    else:  # random weights give logits of ~0.1: relax the filters so masks survive
        kw = dict(points_per_side=args.points_per_side, pred_iou_thresh=0.0, stability_score_thresh=0.1,
                  stability_score_offset=0.02, box_nms_thresh=0.7)
    ims = _images(args.images, (375, 500))
    print(f"model {args.model_type} on {dev} ({'checkpoint' if args.checkpoint else 'random weights'}), "
          f"{len(ims)} images ~500x375, settings {kw}")

    stock = SamAutomaticMaskGenerator(sam, points_per_batch=args.points_per_batch, **kw)
    ours = SamAutoMasks(sam, points_per_batch=args.our_points_per_batch, image_batch=args.image_batch,
                        dtype=args.dtype, model_type=args.model_type, **kw)
    stock.generate(ims[0]); ours.generate(ims[0])  # warm-up
    _sync(dev)
    t = time.perf_counter()
    ref = [stock.generate(im) for im in ims]
    _sync(dev)
    t_stock = time.perf_counter() - t
    t = time.perf_counter()
    got = ours.generate_batch(ims)
    _sync(dev)
    t_ours = time.perf_counter() - t
    fr, n_ref, n_got = [], 0, 0
    for r, g in zip(ref, got):
        a = np.stack([x["segmentation"] for x in r]) if r else np.zeros((0,) + g.shape, bool)
        fr.append(matched_fraction(a, g.masks, 0.99))
        n_ref += len(a)
        n_got += len(g)
    print(f"stock SamAutomaticMaskGenerator: {len(ims) / t_stock:8.3f} images/s ({t_stock:.2f} s, {n_ref} masks)")
    print(f"sepl SamAutoMasks (batched):     {len(ims) / t_ours:8.3f} images/s ({t_ours:.2f} s, {n_got} masks)")
    print(f"speed ratio sepl/stock: {t_stock / t_ours:.2f}x; masks matched at IoU>=0.99: {100 * np.mean(fr):.1f}%")

    if not args.skip_superpixels:
        from sepl.masks.superpixels import HierarchicalSuperpixels

        sp = HierarchicalSuperpixels()
        sp.generate(ims[0])
        times = []
        for im in ims:
            t = time.perf_counter()
            sp.generate(im)
            times.append(time.perf_counter() - t)
        print(f"superpixels (NOT SAM): median {np.median(times):.3f} s / image, max {max(times):.3f} s "
              f"({ims[0].shape[1]}x{ims[0].shape[0]} and similar)")


if __name__ == "__main__":
    main()
