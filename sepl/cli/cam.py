"""``sepl cam train|infer``: CAM networks (HFPL losses) and CAM seeds, on FiftyOne datasets
or on folders (images + label maps from which the image-level labels are read)."""

from __future__ import annotations

import argparse

from ._common import add_command, positive_int

EXAMPLES_TRAIN = """\
  # a FiftyOne dataset whose 'image_labels' field (what `sepl import` writes) holds fo.Classifications
  sepl cam train --dataset voc --labels-field image_labels --out runs/cam --arch resnet50 \\
      --backbone-weights resnet50-imagenet.pth --epochs 8
  # small CPU run on generated scenes, HFPL losses off (GAP only)
  sepl cam train --dataset synth --labels-field image_labels --out runs/tiny --arch tiny \\
      --crop-size 96 --epochs 40 --lr 0.05 --no-importance-sampling --no-feature-similarity
  # folders: image-level labels read from VOC label maps (SegmentationClass)
  sepl cam train --images VOC2012/JPEGImages --label-maps VOC2012/SegmentationClass \\
      --ids VOC2012/ImageSets/Segmentation/train.txt --classes voc --out runs/cam
  # interrupted? the same command resumes from runs/cam/checkpoint.pth
"""

EXAMPLES_INFER = """\
  sepl cam infer --dataset voc --labels-field image_labels --checkpoint runs/cam/checkpoint.pth \\
      --out-field cam_seeds --heatmap-field cam
  sepl cam infer --images VOC2012/JPEGImages --label-maps VOC2012/SegmentationClass \\
      --checkpoint runs/cam/checkpoint.pth --out seeds/ --bg power --alpha 8
"""


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="name of the FiftyOne dataset (or use --images)")
    p.add_argument("--view", default=None, help="name of a saved view of the dataset")
    p.add_argument("--labels-field", default="image_labels",
                   help="image-level labels field (fo.Classifications; `sepl import` writes image_labels)")
    p.add_argument("--images", help="folder of images (instead of --dataset)")
    p.add_argument("--label-maps", help="folder of label-map PNGs whose classes are the image-level labels")
    p.add_argument("--ids", help="file listing the ids to use (default: every label map)")


def register(subparsers):
    p = add_command(subparsers, "cam", help="train CAM networks (HFPL) and generate CAM seeds",
                    description="CAM seeds from image-level labels: `sepl cam train` trains a CAM classifier "
                                "(GAP BCE, HFPL importance sampling and feature similarity), `sepl cam infer` "
                                "turns its multi-scale CAMs into seed label maps.",
                    examples=EXAMPLES_TRAIN + EXAMPLES_INFER)
    sub = p.add_subparsers(title="actions", metavar="ACTION")
    from . import HelpFormatter

    t = sub.add_parser("train", help="train a CAM network", formatter_class=HelpFormatter,
                       description="Train a CAM network; writes OUT/checkpoint.pth and OUT/loss_curve.png "
                                   "after every epoch and resumes from an existing checkpoint.",
                       epilog="examples:\n" + EXAMPLES_TRAIN)
    _source_args(t)
    t.add_argument("--classes", help="comma-separated class names after background, or 'voc'/'coco'/'synth' "
                                     "(default: the dataset's mask targets, else the labels found)")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--arch", default="resnet50", help="tiny, resnet18, resnet34, resnet50, resnet101")
    t.add_argument("--output-stride", type=int, default=16, choices=[8, 16])
    t.add_argument("--backbone-weights", help="local ImageNet weights file (a ResNet needs it or --random-weights)")
    t.add_argument("--random-weights", action="store_true",
                   help="allow a ResNet backbone from random initialisation (recorded in the checkpoint)")
    t.add_argument("--epochs", type=int, default=8)
    t.add_argument("--batch-size", type=positive_int, default=8)
    t.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    t.add_argument("--lr", type=float, default=0.01)
    t.add_argument("--crop-size", type=int, default=448)
    t.add_argument("--no-importance-sampling", dest="importance_sampling", action="store_false")
    t.add_argument("--no-feature-similarity", dest="feature_similarity", action="store_false")
    t.add_argument("--fs-weight", type=float, default=1.0, help="1.0 for VOC, 0.2 for COCO (HFPL)")
    t.add_argument("--no-hue-jitter", action="store_true", help="when colour identifies the classes")
    t.add_argument("--workers", type=int, default=0, help="data-loading processes")
    t.add_argument("--device", default="auto")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=run_train)

    i = sub.add_parser("infer", help="CAM seeds from a trained network", formatter_class=HelpFormatter,
                       description="Seeds from multi-scale + flip CAMs: only each image's labelled classes, "
                                   "background by a constant threshold or (1 - max CAM)^alpha.",
                       epilog="examples:\n" + EXAMPLES_INFER)
    _source_args(i)
    i.add_argument("--checkpoint", required=True)
    i.add_argument("--out-field", default="cam_seeds", help="seed field (dataset mode)")
    i.add_argument("--heatmap-field", help="also store the CAM as fo.Heatmap (dataset mode)")
    i.add_argument("--out", help="output folder of seed PNGs (folder mode)")
    i.add_argument("--scales", default="1.0,0.5,1.5,2.0")
    i.add_argument("--no-flip", dest="flip", action="store_false")
    i.add_argument("--bg", default="threshold", choices=["threshold", "power"])
    i.add_argument("--threshold", type=float, default=0.26)
    i.add_argument("--alpha", type=float, default=8.0)
    i.add_argument("--overwrite", action="store_true")
    i.add_argument("--device", default=None)
    i.set_defaults(func=run_infer)
    p.set_defaults(func=lambda args: p.print_help() or 2)
    return p


def _classes(spec):
    if not spec:
        return None
    from ..classes import COCO_CLASSES, VOC_CLASSES
    from ..synth import SYNTH_CLASSES

    named = {"voc": VOC_CLASSES, "coco": ["background"] + COCO_CLASSES, "synth": SYNTH_CLASSES}
    return named.get(spec.lower()) or ["background"] + [c.strip() for c in spec.split(",") if c.strip()]


def _view(args):
    from ..errors import SeplError

    if bool(args.dataset) == bool(args.images):
        raise SeplError("give either --dataset or --images", hint="see `sepl cam train --help`")
    if args.dataset:
        from ._common import load_view

        return load_view(args)
    return None


def _folder_items(args):
    """(ids, image paths, per-image 1-based class indices) from --images/--label-maps."""
    from ..errors import SeplError
    from ..labelio import find_file, list_ids, read_label
    from ..synth import image_level_labels

    if not args.label_maps:
        raise SeplError("folder mode needs --label-maps to read the image-level labels from")
    ids = list_ids(args.label_maps, args.ids)
    paths, present = [], []
    for sid in ids:
        img = find_file(args.images, sid, (".jpg", ".jpeg", ".png"))
        if img is None:
            raise SeplError(f"no image for id '{sid}' in {args.images}", hint="check --images and --ids")
        paths.append(str(img))
        present.append(image_level_labels(read_label(f"{args.label_maps}/{sid}.png")))
    return ids, paths, present


def run_train(args) -> int:
    from ..cam.train import TrainConfig, train
    from ..errors import SeplError

    cfg = TrainConfig(arch=args.arch, output_stride=args.output_stride, backbone_weights=args.backbone_weights,
                      random_weights=args.random_weights,
                      epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                      crop_size=args.crop_size, importance_sampling=args.importance_sampling,
                      feature_similarity=args.feature_similarity, fs_weight=args.fs_weight,
                      num_workers=args.workers, device=args.device, seed=args.seed)
    if args.no_hue_jitter:
        cfg.color_jitter = cfg.color_jitter[:3] + (0.0,)
    view = _view(args)
    if view is not None:
        from ..fo.cam import train_cam

        model = train_cam(view, args.labels_field, output_dir=args.out, classes=_classes(args.classes), config=cfg)
        history = model.history
    else:
        import numpy as np

        classes = _classes(args.classes)
        if classes is None:
            raise SeplError("folder mode needs --classes", hint="e.g. --classes voc")
        _, paths, present = _folder_items(args)
        labels = np.zeros((len(paths), len(classes) - 1), np.float32)
        for k, cls in enumerate(present):
            for c in cls:
                if c >= len(classes):
                    raise SeplError(f"label value {c} is beyond the {len(classes)} classes", sample=paths[k])
                labels[k, c - 1] = 1
        model, history = train(paths, labels, classes, cfg, args.out)
    print(f"trained {len(history)} iterations; final loss {history[-1]['loss']:.4f}; "
          f"checkpoint {args.out}/checkpoint.pth, curves {args.out}/loss_curve.png")
    return 0


def run_infer(args) -> int:
    from ..errors import SeplError

    scales = [float(s) for s in args.scales.split(",") if s.strip()]
    view = _view(args)
    if view is not None:
        from ..fo.cam import generate_seeds

        summary = generate_seeds(view, args.checkpoint, args.out_field, args.labels_field,
                                 heatmap_field=args.heatmap_field, scales=scales, flip=args.flip, bg_mode=args.bg,
                                 threshold=args.threshold, alpha=args.alpha, overwrite=args.overwrite,
                                 device=args.device)
        print(f"seeds: {summary['written']} written, {summary['skipped']} already done, "
              f"{summary['unlabelled']} without labels (all background) -> field '{args.out_field}'")
        return 0
    from pathlib import Path

    from tqdm import tqdm

    from ..cam.infer import seed_from_image
    from ..cam.train import load_cam_model
    from ..labelio import read_image, write_label

    if not args.out:
        raise SeplError("folder mode needs --out (a folder for the seed PNGs)")
    model = load_cam_model(args.checkpoint)
    ids, paths, present = _folder_items(args)
    out = Path(args.out)
    done = 0
    for sid, path, cls in tqdm(list(zip(ids, paths, present)), desc="CAM seeds"):
        target = out / f"{sid}.png"
        if target.exists() and not args.overwrite:
            continue  # resume
        seed, _ = seed_from_image(model, read_image(path), cls, scales, args.flip, args.bg, args.threshold,
                                  args.alpha, args.device)
        write_label(target, seed)
        done += 1
    print(f"seeds: {done} written to {out} ({len(ids) - done} already there)")
    return 0
