"""``sepl refine``: Refine with SEPL on a FiftyOne dataset (seeds + SAM masks -> labels)."""

from __future__ import annotations

from ._common import add_command, add_dataset_args, add_workers_arg, load_view


def register(subparsers):
    p = add_command(
        subparsers, "refine",
        help="merge seeds with class-agnostic masks on a FiftyOne dataset (SEPL)",
        description="Run the SEPL merge on every sample of a FiftyOne dataset (or saved view): a "
                    "Segmentation field of seeds and a Detections field of SAM masks give a merged "
                    "Segmentation field, plus per-mask decisions in <out>_masks. Recorded as a run; "
                    "rerunning the same command resumes.",
        examples="  sepl refine --dataset voc-train --seeds seeds --masks sam_masks --out sepl\n"
                 "  sepl refine --dataset voc-train --seeds seeds --masks sam_masks --out sepl_official "
                 "--mode official\n"
                 "  sepl refine --dataset voc-train --seeds seeds --masks sam_masks --out sepl --overwrite "
                 "--op-thresh 0.9",
    )
    add_dataset_args(p)
    p.add_argument("--seeds", required=True, help="Segmentation field of seeds")
    p.add_argument("--masks", required=True, help="Detections field of class-agnostic masks")
    p.add_argument("--out", default="sepl", help="output Segmentation field")
    p.add_argument("--mode", default="paper", help="merge mode (see sepl.merge)")
    p.add_argument("--os-thresh", type=float, default=0.5, help="o_s threshold")
    p.add_argument("--op-thresh", type=float, default=0.85, help="o_p threshold")
    p.add_argument("--keep-ignore", action="store_true", help="keep the seed's 255 pixels")
    p.add_argument("--allow-empty", action="store_true",
                   help="a sample with an empty mask set keeps its seed (CAM fallback) instead of failing")
    p.add_argument("--no-decisions", action="store_true", help="do not store <out>_masks")
    p.add_argument("--storage", choices=["db", "disk"], help="label maps in the database or as PNGs")
    p.add_argument("--mask-dir", help="root folder for on-disk label maps")
    p.add_argument("--overwrite", action="store_true", help="replace an output field made otherwise")
    add_workers_arg(p, "merge processes")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from sepl.fo.refine import refine

    from ._common import written_message

    view = load_view(args)
    n = refine(view, args.seeds, args.masks, args.out, mode=args.mode, os_thresh=args.os_thresh,
               op_thresh=args.op_thresh, keep_ignore=args.keep_ignore, allow_empty=args.allow_empty,
               store_decisions=not args.no_decisions, storage=args.storage, mask_dir=args.mask_dir,
               overwrite=args.overwrite, num_workers=args.workers)
    print(written_message(view, args.out, n))
    return 0
