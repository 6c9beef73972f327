"""Operator "SAM 3 pseudo-labels": image tags -> SAM 3 concept prompts -> instance masks -> labels."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._progress import run_operator
from ._util import (add_target_input, field_names, form_params, library_warning, pseudo_label_result,
                    target_view)

URI = "@sepl/sepl/sam3_pseudo_labels"

_RULES = {
    "area": "Smallest mask wins (near-duplicates settled by score) - default",
    "score": "Highest instance score wins",
    "reference": "Prompt order, last writer wins",
}


def _model_inputs(ctx, inputs):
    inputs.str("model", label="SAM 3 model",
               description="save_pretrained folder of Sam3Model + Sam3Processor (e.g. facebook/sam3), "
                           "or a hub name where a network exists")
    inputs.bool("random_weights", default=False, label="Random weights (testing only)",
                description="the tiny random model; the labels are meaningless")
    inputs.enum("dtype", ["float32", "bfloat16", "float16"], default="float32", label="Precision (GPU)")


def _prompt_inputs(ctx, inputs):
    inputs.enum("preset", ["voc", "coco", "none"], default="voc", label="Prompt preset",
                description="voc: class order + horse/diningtable/tvmonitor sub-prompts; coco: alphabetical")
    inputs.str("subprompts", label="Extra sub-prompts",
               description='e.g. "sofa:couch;bottle:wine bottle,water bottle" or a JSON file path')
    inputs.float("score_threshold", default=0.5, label="Instance score threshold")
    inputs.float("presence_threshold", default=0.0, label="Presence threshold (0 = off)")
    inputs.enum("rule", list(_RULES), default="area", label="Overlaps",
                view=types.RadioGroup(choices=[types.Choice(k, label=v) for k, v in _RULES.items()]))
    inputs.bool("ignore_conflicts", default=False, label="Mark pixels two classes claim as ignore (255)")


def build_config(params):
    """A ``Sam3Config`` from the operator's parameters."""
    from sepl.grounded.prompts import parse_subprompts
    from sepl.sam3.pipeline import Sam3Config

    dtype = params.get("dtype") or None
    return Sam3Config(
        model=params.get("model") or None, random_weights=bool(params.get("random_weights", False)),
        preset=params.get("preset", "voc"), subprompts=parse_subprompts(params.get("subprompts")),
        score_threshold=float(params.get("score_threshold", 0.5)),
        presence_threshold=float(params.get("presence_threshold", 0.0)), rule=params.get("rule", "area"),
        ignore_conflicts=bool(params.get("ignore_conflicts", False)), dtype=None if dtype == "float32" else dtype)


class Sam3PseudoLabels(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="sam3_pseudo_labels",
            label="SAM 3 pseudo-labels",
            description="Image-level labels prompt SAM 3 as concepts; every instance found becomes part of a label map",
            icon="auto_awesome",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,  # a SAM 3 pass per image: Schedule is offered first
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
        _model_inputs(ctx, inputs)
        _prompt_inputs(ctx, inputs)
        inputs.str("label_field", default="sam3", required=True, label="Label-map field (Segmentation)")
        inputs.str("detections_field", default="sam3_detections", label="Instances field (Detections)",
                   description="class-agnostic masks too: Refine with SEPL can use this field")
        inputs.bool("overwrite", default=False, label="Overwrite the fields if they exist")
        inputs.enum("device", ["auto", "cuda", "cpu"], default="auto", label="Device")
        inputs.int("batch_size", default=2, label="Images per batch")
        return types.Property(inputs, view=types.View(label="SAM 3 pseudo-labels"))

    def execute(self, ctx):
        p = form_params(ctx)
        view = target_view(ctx)
        return run_operator(ctx, lambda progress: _sam3(view, p, progress), sam3_outputs)

    def resolve_output(self, ctx):
        return sam3_outputs(ctx.results or {})


def _sam3(view, p, progress):
    from sepl.fo.sam3 import sam3_pseudo_labels

    summary = sam3_pseudo_labels(
        view, p["tags_field"], label_field=p.get("label_field", "sam3"),
        detections_field=p.get("detections_field") or None, config=build_config(p),
        device=p.get("device", "auto"), batch_size=int(p.get("batch_size", 2)),
        overwrite=p.get("overwrite", False), progress=progress)
    c = summary["counts"]
    kept = c.get("kept", 0)
    return pseudo_label_result("SAM 3 pseudo-labels", p.get("label_field", "sam3"), summary,
                               c.get("empty_tags", 0) + c.get("no_instance", 0), "instance",
                               {"instances_kept": kept}, f"instances kept: **{kept}**")


def sam3_outputs(results):
    outputs = types.Object()
    outputs.str("summary", label="Result", view=types.MarkdownView(read_only=True))
    return types.Property(outputs, view=types.View(label="SAM 3 pseudo-labels: result"))


OPERATORS = [Sam3PseudoLabels]
