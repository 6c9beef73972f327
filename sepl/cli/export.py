"""``sepl export``: a label field to the VOC layout or FiftyOne's image-segmentation directory."""

from __future__ import annotations

from ._common import add_command, add_dataset_args, load_view


def register(subparsers):
    p = add_command(
        subparsers, "export",
        help="export a label field for training (VOC layout or FiftyOne segmentation directory)",
        description="Export the images and a semantic label field (fo.Segmentation, 255 = ignore kept) of a "
                    "dataset or saved view. 'voc' writes JPEGImages/, SegmentationClass/ (palette PNGs) and "
                    "ImageSets/Segmentation/<split>.txt, the layout DeepLab code reads; 'fiftyone' writes "
                    "<split>/data + <split>/labels (fo.types.ImageSegmentationDirectory). Splits come from "
                    "sample tags (--split-tags) or a random fraction (--val-fraction). An existing, non-empty "
                    "output folder is refused unless --overwrite (which only replaces an earlier export).",
        examples="  sepl export --dataset voc --field sepl_labels --out exports/voc_sepl --val-fraction 0.1\n"
                 "  sepl export --dataset voc --field sepl_labels --out exports/voc_tags --split-tags train val\n"
                 "  sepl export --dataset voc --view clean --field ground_truth --out exports/fo --format fiftyone",
    )
    add_dataset_args(p)
    p.add_argument("--field", required=True, help="semantic label field (fo.Segmentation) to export")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--format", default="voc", choices=("voc", "fiftyone"))
    g = p.add_mutually_exclusive_group()
    g.add_argument("--val-fraction", type=float, default=0.0, help="random fraction of samples for 'val'")
    g.add_argument("--split-tags", nargs="+", default=None, metavar="TAG",
                   help="one split per sample tag (e.g. train val); untagged samples are skipped")
    p.add_argument("--seed", type=int, default=0, help="seed of the random split")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from sepl.fo.export import export_segmentation

    from ._common import writable_dir

    writable_dir(args.out, "--out")
    res = export_segmentation(load_view(args), args.field, args.out, format=args.format,
                              val_fraction=args.val_fraction, split_tags=args.split_tags, seed=args.seed,
                              overwrite=args.overwrite)
    counts = ", ".join(f"{k}: {len(v)}" for k, v in res.splits.items())
    print(f"exported {args.field} ({res.num_classes} classes) to {res.out_dir} [{res.format}] ({counts})")
    if res.skipped:
        print(f"{res.skipped} samples carry none of the split tags and were not exported")
    return 0
