"""``sepl grounded``: Grounded-SAM pseudo-labels for a FiftyOne dataset."""

from __future__ import annotations

from ._common import add_command, positive_int, add_dataset_args, load_view

EXAMPLES = """\
  # original Grounding DINO (Swin-T OGC) + SAM ViT-H, VOC prompts and sub-prompts
  sepl grounded --dataset voc-train --tags-field image_labels \\
      --checkpoint weights/groundingdino_swint_ogc.pth --text-encoder weights/bert-base-uncased \\
      --sam-checkpoint weights/sam_vit_h_4b8939.pth
  # transformers' Grounding DINO from a saved Hugging Face folder, COCO prompts, on a GPU
  sepl grounded --dataset coco --tags-field labels --backend transformers \\
      --hf-model weights/grounding-dino-base --sam-checkpoint weights/sam_vit_h_4b8939.pth \\
      --preset coco --device cuda --batch-size 8
  # the reference's painting rule, extra sub-prompts, and a rerun that replaces the fields
  sepl grounded --dataset voc-train --tags-field image_labels --checkpoint ... --text-encoder ... \\
      --sam-checkpoint ... --rule reference --subprompts "sofa:couch;bottle:wine bottle" --overwrite
"""


def register(subparsers):
    p = add_command(
        subparsers, "grounded",
        help="Grounded-SAM pseudo-labels: image tags -> Grounding DINO boxes -> SAM masks -> label maps",
        description="Prompt Grounding DINO with each sample's image-level labels, prompt SAM with its boxes, "
                    "and paint the masks into a Segmentation field (plus a Detections field with the boxes' "
                    "masks, phrases and scores). Reruns with the same options resume.",
        examples=EXAMPLES,
    )
    add_dataset_args(p)
    p.add_argument("--tags-field", required=True, help="Classifications field of image-level labels")
    p.add_argument("--label-field", default="grounded", help="output Segmentation field")
    p.add_argument("--detections-field", default=None, help="output Detections field (default LABEL_FIELD_detections)")
    d = p.add_argument_group("detector")
    d.add_argument("--backend", choices=["groundingdino", "transformers"], default="groundingdino")
    d.add_argument("--config", default="SwinT_OGC", help="groundingdino-py config: SwinT_OGC, SwinB or a .py path")
    d.add_argument("--checkpoint", default=None, help="Grounding DINO .pth (groundingdino backend)")
    d.add_argument("--text-encoder", default=None, help="local bert-base-uncased folder (groundingdino backend)")
    d.add_argument("--hf-model", default=None, help="Hugging Face Grounding DINO folder, or a hub name such as "
                   "IDEA-Research/grounding-dino-tiny where a network exists (transformers backend)")
    s = p.add_argument_group("SAM")
    s.add_argument("--sam-model", default="vit_h", choices=["vit_h", "vit_l", "vit_b", "tiny"])
    s.add_argument("--sam-checkpoint", default=None, help="SAM .pth")
    s.add_argument("--random-weights", action="store_true", help="build without checkpoints (testing only)")
    q = p.add_argument_group("prompts and labels")
    q.add_argument("--classes", default=None,
                   help="comma-separated class names from index 0 (default: the dataset's mask targets, else VOC)")
    q.add_argument("--preset", choices=["voc", "coco", "none"], default="voc")
    q.add_argument("--subprompts", default=None, help='extra sub-prompts: "sofa:couch;horse:pony" or a JSON file')
    q.add_argument("--box-threshold", type=float, default=0.3)
    q.add_argument("--text-threshold", type=float, default=0.25)
    q.add_argument("--rule", choices=["area", "score", "reference"], default="area",
                   help="how overlapping masks are painted (see sepl.grounded.labelmap)")
    q.add_argument("--ignore-conflicts", action="store_true", help="pixels claimed by two classes become 255")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=positive_int, default=1)
    p.add_argument("--overwrite", action="store_true", help="replace existing output fields")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from sepl.fo.grounded import grounded_pseudo_labels
    from sepl.grounded.pipeline import GroundedConfig
    from sepl.grounded.prompts import parse_subprompts

    view = load_view(args)
    config = GroundedConfig(
        backend=args.backend, config=args.config, checkpoint=args.checkpoint, text_encoder=args.text_encoder,
        hf_model=args.hf_model, sam_model=args.sam_model, sam_checkpoint=args.sam_checkpoint, preset=args.preset,
        subprompts=parse_subprompts(args.subprompts), box_threshold=args.box_threshold,
        text_threshold=args.text_threshold, rule=args.rule, ignore_conflicts=args.ignore_conflicts,
        random_weights=args.random_weights)
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    summary = grounded_pseudo_labels(view, args.tags_field, label_field=args.label_field,
                                     detections_field=args.detections_field, config=config, classes=classes,
                                     device=args.device, batch_size=args.batch_size, overwrite=args.overwrite)
    c = summary["counts"]
    verb = "resumed" if summary["resumed"] else "labelled"
    print(f"{verb} {summary['samples']} samples into '{summary['label_field']}' and '{summary['detections_field']}': "
          f"{c.get('kept', 0)} boxes kept, {c.get('unmatched_phrase', 0) + c.get('below_text_threshold', 0)} "
          f"dropped (phrase not matched), {c.get('empty_tags', 0)} without tags and {c.get('no_detection', 0)} "
          f"without a box left all background")
    return 0
