"""Operator "Generate masks": SAM automatic / box-prompted masks or superpixels (not SAM)."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._progress import run_operator
from ._util import add_target_input, form_params, library_warning, target_view

URI = "@sepl/sepl/generate_masks"

_SOURCES = {
    "sam_auto": "SAM automatic masks",
    "sam_box": "SAM masks for the boxes of a Detections field",
    "superpixels": "Superpixels (classical, NOT SAM: no checkpoint needed)",
    "sam2_auto": "SAM 2 / 2.1 automatic masks (transformers; checkpoint = model folder or hub name)",
    "samhq_auto": "SAM-HQ automatic masks (transformers; checkpoint = model folder or hub name)",
    "zoo": "A SAM of FiftyOne's model zoo (FiftyOne runs it; weights in its zoo folder)",
}
_HF = ("sam2_auto", "samhq_auto")
_AUTO = [  # name, type, default, label
    ("points_per_side", "int", 32, "Points per side"),
    ("pred_iou_thresh", "float", 0.88, "Predicted IoU threshold"),
    ("stability_score_thresh", "float", 0.95, "Stability score threshold"),
    ("box_nms_thresh", "float", 0.7, "Box NMS threshold"),
    ("crop_n_layers", "int", 0, "Crop layers"),
    ("min_mask_region_area", "int", 0, "Min region area (pixels)"),
]


def _sam_inputs(ctx, inputs):
    inputs.enum("model_type", ["vit_h", "vit_l", "vit_b", "tiny"], default="vit_h", label="Model type",
                description="tiny = random weights, for testing only")
    inputs.bool("random_weights", default=False, label="Allow random SAM weights (testing only)",
                description="without a checkpoint SAM is refused unless this is set; recorded in the run")
    inputs.str("checkpoint", label="Checkpoint (optional)",
               description="path to the .pth; else $SEPL_SAM_CHECKPOINT or FiftyOne's model zoo folder")
    inputs.enum("device", ["auto", "cuda", "cpu"], default="auto", label="Device")
    inputs.int("batch_size", default=4, label="Images per batch")


def _params(ctx):
    p = form_params(ctx)
    if p.get("source", "sam_auto") in ("sam_auto",) + _HF:
        return {name: p[name] for name, *_ in _AUTO if p.get(name) is not None}
    if p.get("source") == "superpixels":
        return {"mode": p.get("sp_mode", "partition")}
    return {}


class GenerateMasks(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="generate_masks",
            label="Generate masks",
            description="Class-agnostic masks (SAM or superpixels) into a Detections field",
            icon="grid_view",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,
        )

    def resolve_delegation(self, ctx):
        if (ctx.params.get("num_shards") or 1) > 1 and ctx.params.get("shard") is None:
            return False  # the parent only queues the shards
        return None  # FiftyOne's own choice: Execute or Schedule (delegated by default)

    def resolve_input(self, ctx):
        inputs = types.Object()
        if library_warning(inputs):
            return types.Property(inputs)
        add_target_input(ctx, inputs, action="Generate masks for")
        inputs.enum("source", list(_SOURCES), default="sam_auto", label="Mask source",
                    view=types.RadioGroup(choices=[types.Choice(k, label=v) for k, v in _SOURCES.items()]))
        source = ctx.params.get("source", "sam_auto")
        if source == "superpixels":
            inputs.view("not_sam", types.Warning(label="Superpixels are not SAM masks",
                                                  description="coarser regions; SEPL gains little from them"))
            inputs.enum("sp_mode", ["partition", "hierarchy"], default="partition", label="Regions")
        elif source == "zoo":
            from sepl.fo.zoo import sam_zoo_models

            inputs.enum("zoo_model", sam_zoo_models(), default="segment-anything-vitb-torch", required=True,
                        label="Zoo model")
            inputs.bool("download", default=False, label="Download the weights if missing (needs a network)")
            inputs.int("batch_size", default=4, label="Images per batch")
        else:
            _sam_inputs(ctx, inputs)
        if source == "sam_box":
            from fiftyone import Detections

            from ._util import field_names

            fields = field_names(ctx.dataset, Detections)
            if not fields:
                inputs.view("no_boxes", types.Error(label="No Detections field holds boxes to prompt with"))
                return types.Property(inputs)
            inputs.enum("prompt_field", fields, required=True, label="Boxes from")
        if source in ("sam_auto",) + _HF:
            for name, kind, default, label in _AUTO:
                getattr(inputs, kind)(name, default=default, label=label)
        inputs.str("out_field", default="sam_masks" if source != "superpixels" else "superpixel_masks",
                   required=True, label="Output field")
        inputs.bool("overwrite", default=False, label="Overwrite the field if it exists")
        inputs.int("num_shards", default=1, label="Workers (shards)",
                   description="more than 1: queue this many delegated operations, one per "
                               "`fiftyone delegated launch` worker")
        return types.Property(inputs, view=types.View(label="Generate masks"))

    def execute(self, ctx):
        p = form_params(ctx)
        view = target_view(ctx)
        return run_operator(ctx, lambda progress: _generate(ctx, view, p, progress), masks_outputs)

    def resolve_output(self, ctx):
        return masks_outputs(ctx.results or {})


def _generate(ctx, view, p, progress):
    from sepl.fo import masks

    source = p.get("source", "sam_auto")
    if source == "zoo":
        source = "zoo:" + p["zoo_model"]
    n = int(p.get("num_shards", 1) or 1)
    common = dict(out_field=p["out_field"], source=source, model_type=p.get("model_type", "vit_h"),
                  checkpoint=p.get("checkpoint") or None, params=_params(ctx),
                  prompt_field=p.get("prompt_field"), random_weights=bool(p.get("random_weights", False)))
    if n > 1 and p.get("shard") is None:
        masks.prepare_run(ctx.dataset, common["out_field"], source, common["model_type"], common["params"],
                          common["checkpoint"], common["prompt_field"], overwrite=p.get("overwrite", False),
                          random_weights=common["random_weights"])
        # each shard acts on the serialized target view itself
        queued = masks.queue_shards(URI, ctx.dataset, view, dict(p, overwrite=False, view_target="CURRENT_VIEW"), n)
        return {"queued": queued, "summary": f"**Generate masks queued {len(queued)} delegated operations**\n\n"
                                              "Run them with `fiftyone delegated launch` (one per worker)."}
    shard = (int(p["shard"]), n) if p.get("shard") is not None else None
    summary = masks.generate_masks(view, device=p.get("device", "auto"), batch_size=p.get("batch_size", 4),
                                   download=bool(p.get("download", False)),
                                   overwrite=p.get("overwrite", False), shard=shard, progress=progress, **common)
    failed = summary["failed"]
    text = (f"**Generate masks wrote `{p['out_field']}`** ({_SOURCES.get(summary['source'], summary['source'])})"
            f"\n\n- samples given masks: **{summary['processed']}**\n- resumed (already done): "
            f"**{summary['skipped']}**\n- failed: **{len(failed)}**")
    if failed:
        text += "\n\n**Failures**: " + "; ".join(failed[:20])
    return {"processed": summary["processed"], "skipped": summary["skipped"], "failed": len(failed),
            "failures": "\n".join(failed), "source": summary["source"], "summary": text}


def masks_outputs(results):
    outputs = types.Object()
    outputs.str("summary", label="Result", view=types.MarkdownView(read_only=True))
    return types.Property(outputs, view=types.View(label="Generate masks: result"))


OPERATORS = [GenerateMasks]
