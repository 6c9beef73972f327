"""``sepl sam3``: SAM 3 concept pseudo-labels for a FiftyOne dataset."""

from __future__ import annotations

import sys

from ._common import add_command, add_dataset_args, load_view

EXAMPLES = """\
  # SAM 3 from a downloaded facebook/sam3 folder, VOC prompts and sub-prompts, on a GPU
  sepl sam3 --dataset voc-train --tags-field image_labels --model weights/sam3 --device cuda --dtype bfloat16
  # COCO prompts, a stricter score, the reference painting rule, replacing earlier fields
  sepl sam3 --dataset coco --tags-field labels --model weights/sam3 --preset coco \\
      --score-threshold 0.6 --rule reference --overwrite
  # then SEPL on SAM 3's instance masks (class-agnostic masks too) with CAM seeds
  sepl refine --dataset voc-train --seeds cam_seeds --masks sam3_detections --out sepl_sam3
  # no weights at hand: the tiny random model (testing only: the labels are meaningless)
  sepl sam3 --dataset voc-train --tags-field image_labels --random-weights --label-field sam3_test
"""


def register(subparsers):
    p = add_command(
        subparsers, "sam3",
        help="SAM 3 pseudo-labels: image tags -> concept prompts -> instance masks -> label maps",
        description="Prompt SAM 3 with each sample's image-level labels (class names plus the preset's "
                    "sub-prompts, mapped back to their class), keep the instances above the score / presence "
                    "thresholds, and paint them into a Segmentation field (plus a Detections field with every "
                    "instance's mask, phrase and score). Reruns with the same options resume; samples that "
                    "fail are reported and retried by the next run.",
        examples=EXAMPLES,
    )
    add_dataset_args(p)
    p.add_argument("--tags-field", required=True, help="Classifications field of image-level labels")
    p.add_argument("--label-field", default="sam3", help="output Segmentation field")
    p.add_argument("--detections-field", default=None, help="output Detections field (default LABEL_FIELD_detections)")
    m = p.add_argument_group("model")
    m.add_argument("--model", default=None,
                   help="save_pretrained folder of Sam3Model + Sam3Processor, a weights file with config.json "
                        "beside it, or a hub name (facebook/sam3) where a network exists")
    m.add_argument("--random-weights", action="store_true", help="the tiny random model (testing only)")
    m.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="autocast (GPU)")
    q = p.add_argument_group("prompts and labels")
    q.add_argument("--classes", default=None,
                   help="comma-separated class names from index 0 (default: the dataset's mask targets, else VOC)")
    q.add_argument("--preset", choices=["voc", "coco", "none"], default="voc")
    q.add_argument("--subprompts", default=None, help='extra sub-prompts: "sofa:couch;horse:pony" or a JSON file')
    q.add_argument("--score-threshold", type=float, default=0.5, help="instance score (query x presence) > this")
    q.add_argument("--presence-threshold", type=float, default=0.0,
                   help="drop every instance of a phrase whose presence score is not > this (0 = off)")
    q.add_argument("--mask-threshold", type=float, default=0.5)
    q.add_argument("--rule", choices=["area", "score", "reference"], default="area",
                   help="how overlapping masks are painted (see sepl.grounded.labelmap)")
    q.add_argument("--ignore-conflicts", action="store_true", help="pixels claimed by two classes become 255")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=2, help="images per batch")
    p.add_argument("--overwrite", action="store_true", help="replace existing output fields")
    p.set_defaults(func=run)
    return p


def config_from_args(args):
    from sepl.grounded.prompts import parse_subprompts
    from sepl.sam3.pipeline import Sam3Config

    return Sam3Config(model=args.model, random_weights=args.random_weights, preset=args.preset,
                      subprompts=parse_subprompts(args.subprompts), score_threshold=args.score_threshold,
                      presence_threshold=args.presence_threshold, mask_threshold=args.mask_threshold,
                      rule=args.rule, ignore_conflicts=args.ignore_conflicts, dtype=args.dtype)


def run(args) -> int:
    from sepl.fo.sam3 import sam3_pseudo_labels

    view = load_view(args)
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    summary = sam3_pseudo_labels(view, args.tags_field, label_field=args.label_field,
                                 detections_field=args.detections_field, config=config_from_args(args),
                                 classes=classes, device=args.device, batch_size=args.batch_size,
                                 overwrite=args.overwrite)
    c = summary["counts"]
    verb = "resumed" if summary["resumed"] else "labelled"
    print(f"{verb} {summary['samples']} samples into '{summary['label_field']}' and '{summary['detections_field']}': "
          f"{c.get('kept', 0)} instances kept, {c.get('empty_tags', 0)} without tags and "
          f"{c.get('no_instance', 0)} without an instance left all background, {len(summary['failed'])} failed")
    for line in summary["failed"]:
        print(f"  failed: {line}", file=sys.stderr)
    return 1 if summary["failed"] else 0
