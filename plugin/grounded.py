"""Operator "Grounded-SAM pseudo-labels": image tags -> Grounding DINO boxes -> SAM masks -> labels."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._progress import run_operator
from ._util import (add_target_input, field_names, form_params, library_warning, pseudo_label_result,
                    target_view)

URI = "@sepl/sepl/grounded_sam_pseudo_labels"

_BACKENDS = {
    "groundingdino": "groundingdino-py (original checkpoints: Swin-T OGC, Swin-B)",
    "transformers": "transformers (Hugging Face checkpoint folder)",
}
_RULES = {
    "area": "Smallest mask wins (near-duplicates settled by score) - default",
    "score": "Highest detector score wins",
    "reference": "Detection order, last writer wins (wsss_sam)",
}


def _detector_inputs(ctx, inputs):
    inputs.enum("backend", list(_BACKENDS), default="groundingdino", label="Detector",
                view=types.RadioGroup(choices=[types.Choice(k, label=v) for k, v in _BACKENDS.items()]))
    if ctx.params.get("backend", "groundingdino") == "transformers":
        inputs.str("hf_model", required=True, label="Hugging Face model folder",
                   description="save_pretrained() of GroundingDinoForObjectDetection and its processor")
    else:
        inputs.enum("gdino_config", ["SwinT_OGC", "SwinB"], default="SwinT_OGC", label="Config")
        inputs.str("checkpoint", label="Checkpoint (.pth)",
                   description="groundingdino_swint_ogc.pth or groundingdino_swinb_cogcoor.pth")
        inputs.str("text_encoder", required=True, label="Text encoder folder",
                   description="local bert-base-uncased (config, weights, tokenizer)")


def _sam_inputs(ctx, inputs):
    inputs.enum("sam_model", ["vit_h", "vit_l", "vit_b", "tiny"], default="vit_h", label="SAM model type")
    inputs.str("sam_checkpoint", label="SAM checkpoint (.pth)")
    inputs.bool("random_weights", default=False, label="Allow random weights (testing only)",
                description="build without checkpoints; the labels are meaningless")


def _prompt_inputs(ctx, inputs):
    inputs.enum("preset", ["voc", "coco", "none"], default="voc", label="Prompt preset",
                description="voc: class order + horse/diningtable/tvmonitor sub-prompts; coco: alphabetical")
    inputs.str("subprompts", label="Extra sub-prompts",
               description='e.g. "sofa:couch;bottle:wine bottle,water bottle" or a JSON file path')
    inputs.float("box_threshold", default=0.3, label="Box threshold")
    inputs.float("text_threshold", default=0.25, label="Text threshold")
    inputs.enum("rule", list(_RULES), default="area", label="Overlaps",
                view=types.RadioGroup(choices=[types.Choice(k, label=v) for k, v in _RULES.items()]))
    inputs.bool("ignore_conflicts", default=False, label="Mark pixels two classes claim as ignore (255)")


def build_config(params):
    """A ``GroundedConfig`` from the operator's parameters."""
    from sepl.grounded.pipeline import GroundedConfig
    from sepl.grounded.prompts import parse_subprompts

    return GroundedConfig(
        backend=params.get("backend", "groundingdino"), config=params.get("gdino_config", "SwinT_OGC"),
        checkpoint=params.get("checkpoint") or None, text_encoder=params.get("text_encoder") or None,
        hf_model=params.get("hf_model") or None, sam_model=params.get("sam_model", "vit_h"),
        sam_checkpoint=params.get("sam_checkpoint") or None, preset=params.get("preset", "voc"),
        subprompts=parse_subprompts(params.get("subprompts")),
        box_threshold=float(params.get("box_threshold", 0.3)), text_threshold=float(params.get("text_threshold", 0.25)),
        rule=params.get("rule", "area"), ignore_conflicts=bool(params.get("ignore_conflicts", False)),
        random_weights=bool(params.get("random_weights", False)),
        **({"detector_overrides": params["detector_overrides"]} if params.get("detector_overrides") else {}),
    )


class GroundedPseudoLabels(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="grounded_sam_pseudo_labels",
            label="Grounded-SAM pseudo-labels",
            description="Image-level labels prompt Grounding DINO; its boxes prompt SAM; masks become a label map",
            icon="travel_explore",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,  # detector + SAM per image: Schedule is offered first
        )

    def resolve_input(self, ctx):
        import fiftyone as fo

        inputs = types.Object()
        if library_warning(inputs):
            return types.Property(inputs)
        tag_fields = field_names(ctx.dataset, fo.Classifications)
        if not tag_fields:
            inputs.view("no_tags", types.Error(label="No Classifications field holds image-level labels",
                                               description="add one per sample, e.g. with sepl's image-label tools"))
            return types.Property(inputs)
        add_target_input(ctx, inputs, action="Label")
        inputs.enum("tags_field", tag_fields, required=True, default=tag_fields[0], label="Image-level labels")
        _detector_inputs(ctx, inputs)
        _sam_inputs(ctx, inputs)
        _prompt_inputs(ctx, inputs)
        inputs.str("label_field", default="grounded", required=True, label="Label-map field (Segmentation)")
        inputs.str("detections_field", default="grounded_detections", label="Boxes + masks field (Detections)")
        inputs.bool("overwrite", default=False, label="Overwrite the fields if they exist")
        inputs.enum("device", ["auto", "cuda", "cpu"], default="auto", label="Device")
        inputs.int("batch_size", default=1, label="Images per batch")
        return types.Property(inputs, view=types.View(label="Grounded-SAM pseudo-labels"))

    def execute(self, ctx):
        p = form_params(ctx)
        view = target_view(ctx)
        return run_operator(ctx, lambda progress: _grounded(view, p, progress), grounded_outputs)

    def resolve_output(self, ctx):
        return grounded_outputs(ctx.results or {})


def _grounded(view, p, progress):
    from sepl.fo.grounded import grounded_pseudo_labels

    summary = grounded_pseudo_labels(
        view, p["tags_field"], label_field=p.get("label_field", "grounded"),
        detections_field=p.get("detections_field") or None, config=build_config(p),
        device=p.get("device", "auto"), batch_size=int(p.get("batch_size", 1)),
        overwrite=p.get("overwrite", False), progress=progress)
    c = summary["counts"]
    kept, dropped = c.get("kept", 0), c.get("unmatched_phrase", 0) + c.get("below_text_threshold", 0)
    return pseudo_label_result("Grounded-SAM pseudo-labels", p.get("label_field", "grounded"), summary,
                               c.get("empty_tags", 0) + c.get("no_detection", 0), "box",
                               {"boxes_kept": kept, "boxes_dropped": dropped},
                               f"boxes kept: **{kept}**; dropped (phrase not matched): **{dropped}**")


def grounded_outputs(results):
    outputs = types.Object()
    outputs.str("summary", label="Result", view=types.MarkdownView(read_only=True))
    return types.Property(outputs, view=types.View(label="Grounded-SAM pseudo-labels: result"))


OPERATORS = [GroundedPseudoLabels]
