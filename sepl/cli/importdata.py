"""``sepl import KIND``: datasets (voc, coco, folder) and fields (seeds, cams, masks) into FiftyOne."""

from __future__ import annotations

from ._common import add_command, load_view

EXAMPLES = """\
  sepl import voc --dataset voc-train --root VOCdevkit/VOC2012 --split train
  sepl import voc --dataset voc-train --root ../shared/data/voc2012_train --image-dir images \\
      --label-dir gt --ids-file ../shared/data/voc2012_train/train.txt
  sepl import coco --dataset coco14 --images train2014 --annotations instances_train2014.json
  sepl import folder --dataset mine --images photos/ --tags tags.csv
  sepl import seeds --dataset voc-train --folder transcam/ --field seeds
  sepl import cams --dataset voc-train --folder irn_cams/ --field seeds --bg-threshold 0.26
  sepl import masks --dataset voc-train --folder amg_out/ --field sam_masks
"""


def register(subparsers):
    p = add_command(
        subparsers, "import",
        help="import a dataset (VOC, COCO, folder + tags) or seeds, CAMs, SAM masks into FiftyOne",
        description="Create or extend a FiftyOne dataset (samples already in it are skipped), or fill "
                    "one field of its samples from files named after each image's stem. Field imports "
                    "are recorded as runs, resume where they stopped and never overwrite a field "
                    "unless --overwrite is given.",
        examples=EXAMPLES,
    )
    p.add_argument("kind", choices=["voc", "coco", "folder", "seeds", "cams", "masks"], help="what to import")
    p.add_argument("--dataset", required=True, help="FiftyOne dataset name (created, persistent, when absent)")
    p.add_argument("--root", help="voc: the VOC2012 folder")
    p.add_argument("--split", default="train", help="voc: ImageSets/Segmentation/<split>.txt")
    p.add_argument("--ids-file", help="voc: an id list instead of the split's")
    p.add_argument("--image-dir", default="JPEGImages", help="voc: image folder under --root")
    p.add_argument("--label-dir", default="SegmentationClass", help="voc: label PNG folder under --root")
    p.add_argument("--images", help="coco/folder: the image folder")
    p.add_argument("--annotations", help="coco: instances_*.json")
    p.add_argument("--max-samples", type=int, help="coco: import only the first N images")
    p.add_argument("--tags", help="folder: CSV with 'filename' and 'tags' columns (tags separated by ';')")
    p.add_argument("--classes", help="class names, comma separated, background first (default: the dataset's)")
    p.add_argument("--folder", help="seeds/cams/masks: the folder of per-image files")
    p.add_argument("--field", help="seeds/cams: default 'seeds'; masks: default 'sam_masks'; voc/coco: the GT field")
    p.add_argument("--bg-threshold", type=float, help="cams: constant background score (e.g. 0.26)")
    p.add_argument("--bg-power", type=float, help="cams: background = (1 - max CAM) ** power")
    p.add_argument("--storage", choices=["db", "disk"], help="label maps in the database or as PNGs (mask_path)")
    p.add_argument("--mask-dir", help="root folder for on-disk label maps (default: FiftyOne's dataset dir)")
    p.add_argument("--view", help="seeds/cams/masks: a saved view to restrict to")
    p.add_argument("--overwrite", action="store_true", help="replace a field made otherwise")
    p.add_argument("--workers", type=int, default=0,
                   help="seeds/cams/masks: decoding processes (default 0: all cores)")
    p.set_defaults(func=run)
    return p


def _need(args, *names):
    from sepl.errors import SeplError

    for n in names:
        if getattr(args, n.replace("-", "_")) is None:
            raise SeplError(f"`sepl import {args.kind}` needs --{n}", hint="see `sepl import --help`")


def run(args) -> int:
    from sepl.fo import importers

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    if args.kind in ("voc", "coco", "folder"):
        if args.kind == "voc":
            _need(args, "root")
            from sepl.classes import VOC_CLASSES

            ds = importers.import_voc(args.root, name=args.dataset, split=args.split, ids_file=args.ids_file,
                                      image_dir=args.image_dir, label_dir=args.label_dir,
                                      gt_field=args.field or "ground_truth", classes=classes or VOC_CLASSES,
                                      storage=args.storage, mask_dir=args.mask_dir)
        elif args.kind == "coco":
            _need(args, "images", "annotations")
            ds = importers.import_coco(args.images, args.annotations, name=args.dataset,
                                       gt_field=args.field or "ground_truth", max_samples=args.max_samples,
                                       storage=args.storage, mask_dir=args.mask_dir)
        else:
            _need(args, "images")
            ds = importers.import_folder(args.images, args.tags, name=args.dataset, classes=classes)
        print(f"dataset '{ds.name}': {len(ds)} samples")
        return 0
    _need(args, "folder")
    view = load_view(args, hint="import images first (sepl import voc|coco|folder)")
    ds = view._dataset
    field = args.field or ("sam_masks" if args.kind == "masks" else "seeds")
    if args.kind == "seeds":
        n = importers.import_seeds(view, args.folder, field=args.field or "seeds", classes=classes,
                                   storage=args.storage, mask_dir=args.mask_dir, overwrite=args.overwrite,
                                   num_workers=args.workers)
    elif args.kind == "cams":
        n = importers.import_cams(view, args.folder, field=args.field or "seeds", bg_threshold=args.bg_threshold,
                                  bg_power=args.bg_power, classes=classes, storage=args.storage,
                                  mask_dir=args.mask_dir, overwrite=args.overwrite, num_workers=args.workers)
    else:
        n = importers.import_masks(view, args.folder, field=args.field or "sam_masks", overwrite=args.overwrite,
                                   num_workers=args.workers)
    from ._common import written_message

    print(f"dataset '{ds.name}': {written_message(view, field, n)}")
    return 0
