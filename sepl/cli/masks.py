"""``sepl masks``: class-agnostic masks (SAM automatic / box-prompted, or superpixels)."""

from __future__ import annotations

import argparse
import sys

from ._common import add_command, load_view, positive_int

EXAMPLES = """\
  # SAM ViT-H automatic masks (the SEPL setting) for a FiftyOne dataset
  sepl masks --dataset voc --model-type vit_h --checkpoint ~/models/sam_vit_h_4b8939.pth
  # a folder of images -> one amg.py folder per image (N.png + metadata.csv)
  sepl masks --images VOC2012/JPEGImages --ids train.txt --out-dir sam_masks/ --model-type vit_b
  # two GPUs on one machine, each taking half of the dataset (rerun = resume)
  CUDA_VISIBLE_DEVICES=0 sepl masks --dataset voc --shard 0/2 &
  CUDA_VISIBLE_DEVICES=1 sepl masks --dataset voc --shard 1/2
  # no checkpoint at hand: classical superpixels (NOT SAM)
  sepl masks --dataset voc --source superpixels --out-field superpixel_masks
  # one SAM mask per box of a Detections field
  sepl masks --dataset voc --source sam_box --prompt-field detections --out-field box_masks
  # a FiftyOne model-zoo SAM, run by FiftyOne (weights in FiftyOne's zoo folder; --download fetches them)
  sepl masks --dataset voc --zoo-model segment-anything-vitb-torch --out-field zoo_masks
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = add_command(
        subparsers, "masks", help="generate class-agnostic masks (SAM or superpixels)",
        description=("Generate class-agnostic masks for a FiftyOne dataset (into a Detections field, resumable, "
                     "shardable over workers) or for a folder of images (written in segment-anything's amg.py "
                     "layout). The SAM checkpoint comes from --checkpoint, $SEPL_SAM_CHECKPOINT, or the "
                     "released file name in $SEPL_SAM_DIR / FiftyOne's model zoo folder / ~/.cache/sepl."),
        examples=EXAMPLES)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--dataset", help="name of the FiftyOne dataset")
    where.add_argument("--images", help="folder of images (writes --out-dir instead of a dataset field)")
    p.add_argument("--view", default=None, help="name of a saved view of the dataset to restrict to")
    p.add_argument("--ids", default=None, help="with --images: a file of image ids (one a line) to process")
    p.add_argument("--out-dir", default=None, help="with --images: where the per-image amg folders go")
    p.add_argument("--source", choices=["sam_auto", "sam_box", "superpixels", "sam2_auto", "samhq_auto"],
                   default="sam_auto", help="sam2_auto / samhq_auto: --checkpoint is a transformers folder or hub name")
    p.add_argument("--zoo-model", default=None,
                   help="with --dataset: a FiftyOne model-zoo SAM instead of --source (e.g. "
                        "segment-anything-vitb-torch; its weights load from FiftyOne's zoo folder, --download)")
    p.add_argument("--model-type", choices=["vit_h", "vit_l", "vit_b", "tiny"], default="vit_h")
    p.add_argument("--checkpoint", default=None, help="SAM .pth file")
    p.add_argument("--download", action="store_true", help="download the released checkpoint if none is found")
    p.add_argument("--random-weights", action="store_true",
                   help="allow SAM without a checkpoint: random weights, meaningless masks (tests, speed runs); "
                        "recorded in the run")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:1, cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="autocast the image encoder (GPU)")
    p.add_argument("--batch-size", type=positive_int, default=4, help="images per encoder batch")
    p.add_argument("--out-field", default="sam_masks", help="Detections field to write")
    p.add_argument("--prompt-field", default=None, help="--source sam_box: the Detections field with the boxes")
    p.add_argument("--multimask", action="store_true", help="--source sam_box: best of SAM's 3 masks per box")
    p.add_argument("--shard", default=None, help="I/N: process only shard I of N (0-based)")
    p.add_argument("--workers", type=int, default=0,
                   help="dataset: superpixel processes, or image-decoding threads for SAM (default 0: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing field made otherwise")
    g = p.add_argument_group("SAM automatic mask parameters (SamAutomaticMaskGenerator's)")
    g.add_argument("--points-per-side", type=int, default=32)
    g.add_argument("--points-per-batch", type=int, default=128)
    g.add_argument("--pred-iou-thresh", type=float, default=0.88)
    g.add_argument("--stability-score-thresh", type=float, default=0.95)
    g.add_argument("--box-nms-thresh", type=float, default=0.7)
    g.add_argument("--crop-n-layers", type=int, default=0)
    g.add_argument("--min-mask-region-area", type=int, default=0)
    s = p.add_argument_group("superpixel parameters (classical, NOT SAM)")
    s.add_argument("--sp-mode", choices=["partition", "hierarchy"], default="partition")
    s.add_argument("--sp-scales", type=float, nargs="+", default=[100.0])
    p.set_defaults(func=run)
    return p


def _params(args) -> dict:
    if args.source == "superpixels":
        return {"mode": args.sp_mode, "scales": list(args.sp_scales)}
    if args.source == "sam_box":
        return {}
    return {**{k: getattr(args, k) for k in ("points_per_side", "points_per_batch", "pred_iou_thresh",
                                          "stability_score_thresh", "box_nms_thresh", "crop_n_layers",
                                          "min_mask_region_area")}}


def _shard(text):
    from ..errors import SeplError

    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise SeplError(f"--shard {text!r} is not I/N", hint="e.g. --shard 0/4")
    return i, n


def run(args) -> int:
    if args.images:
        return _run_folder(args)

    from ..fo import masks

    view = load_view(args).view()
    summary = masks.generate_masks(
        view, out_field=args.out_field, source=f"zoo:{args.zoo_model}" if args.zoo_model else args.source,
        model_type=args.model_type,
        checkpoint=args.checkpoint, params=_params(args), prompt_field=args.prompt_field, device=args.device,
        dtype=args.dtype, batch_size=args.batch_size, download=args.download, multimask=args.multimask,
        overwrite=args.overwrite, shard=_shard(args.shard), num_workers=args.workers,
        random_weights=args.random_weights)
    print(f"{summary['processed']} samples given masks ({summary['source']}), "
          f"{summary['skipped']} already done, {len(summary['failed'])} failed")
    for line in summary["failed"]:
        print(f"  failed: {line}", file=sys.stderr)
    return 1 if summary["failed"] else 0


def _run_folder(args) -> int:
    import shutil
    from pathlib import Path

    from tqdm import tqdm

    from ..amgio import write_amg_folder
    from ..errors import SeplError
    from ..fo.masks import make_source
    from ..labelio import read_image

    if not args.out_dir:
        raise SeplError("--images needs --out-dir", hint="say where the amg folders go")
    if args.source == "sam_box":
        raise SeplError("--source sam_box needs boxes from a dataset", hint="use --dataset with --prompt-field")
    images = Path(args.images)
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
    if args.ids:
        ids = Path(args.ids).read_text().split()
        files = {p.stem: p for p in images.iterdir() if p.suffix.lower() in exts}
        missing = [i for i in ids if i not in files]
        if missing:
            raise SeplError(f"{len(missing)} ids have no image in {images} (e.g. {missing[0]})",
                            hint="check --images and --ids")
        paths = [files[i] for i in ids]
    else:
        paths = sorted(p for p in images.iterdir() if p.suffix.lower() in exts)
    shard = _shard(args.shard)
    if shard:
        paths = paths[shard[0]::shard[1]]
    out = Path(args.out_dir)
    todo = [p for p in paths if not (out / p.stem / "metadata.csv").is_file()]  # rerun = resume
    src = make_source(args.source, args.model_type, args.checkpoint, device=args.device, dtype=args.dtype,
                      image_batch=args.batch_size, download=args.download, random_weights=args.random_weights,
                      **_params(args))
    failed = []
    for start in tqdm(range(0, len(todo), args.batch_size), desc="masks", unit="batch"):
        batch, ims = [], []
        for p in todo[start:start + args.batch_size]:
            try:
                ims.append(read_image(p))
                batch.append(p)
            except Exception as e:
                failed.append(f"{p.name}: {e}")
        for p, ms in zip(batch, src.generate_batch(ims) if ims else []):
            tmp, final = out / (p.stem + ".partial"), out / p.stem
            for stale in (tmp, final):
                if stale.exists():
                    shutil.rmtree(stale)
            write_amg_folder(tmp, ms.masks, ms.records())
            tmp.replace(final)  # a folder with metadata.csv is always complete
    print(f"{len(todo) - len(failed)} images written to {out} ({getattr(src, 'name', args.source)}), "
          f"{len(paths) - len(todo)} already there, {len(failed)} failed")
    for line in failed:
        print(f"  failed: {line}", file=sys.stderr)
    return 1 if failed else 0
