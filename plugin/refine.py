"""Operator "Refine with SEPL": seeds + class-agnostic masks -> merged labels."""

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._progress import run_with_progress
from ._util import add_target_input, field_names, form_params, target_view

MODES = ("paper", "official")


class RefineWithSepl(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="refine_with_sepl",
            label="Refine with SEPL",
            description="Merge CAM seeds with class-agnostic SAM masks into pseudo-labels",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_delegation(self, ctx):
        return ctx.params.get("delegate", False)

    def resolve_input(self, ctx):
        inputs = types.Object()
        if _refine_form(ctx, inputs):
            add_target_input(ctx, inputs)
            inputs.bool("delegate", default=False, label="Delegate",
                        description="Queue the run for a delegated-operation worker")
        return types.Property(inputs, view=types.View(label="Refine with SEPL"))

    def execute(self, ctx):
        from sepl.fo.refine import refine

        p = form_params(ctx)
        view = target_view(ctx)
        done = yield from run_with_progress(ctx, lambda progress: refine(
            view, p["seed_field"], p["masks_field"], p["out_field"], mode=p.get("mode", "paper"),
            os_thresh=p.get("os_thresh", 0.5), op_thresh=p.get("op_thresh", 0.85),
            keep_ignore=p.get("keep_ignore", False), store_decisions=p.get("store_decisions", True),
            overwrite=p.get("overwrite", False), num_workers=p.get("num_workers") or None, progress=progress))
        if not ctx.delegated:
            yield ctx.trigger("reload_dataset")
        return {"written": done}


def _refine_form(ctx, inputs) -> bool:
    """Inputs revealed step by step; False while a prerequisite is missing."""
    segs = field_names(ctx.dataset, fo.Segmentation)
    dets = field_names(ctx.dataset, fo.Detections)
    if not segs or not dets:
        inputs.view("need", types.Warning(
            label="Refining needs a Segmentation field of seeds and a Detections field of masks",
            description="Import them with `sepl import seeds|cams|masks`"))
        return False
    seed_default = next((f for f in ("seeds", "seed") if f in segs), segs[0])
    inputs.enum("seed_field", segs, default=seed_default, required=True, label="Seed field",
                description="CAM pseudo-labels (fo.Segmentation)", view=types.DropdownView())
    inputs.enum("masks_field", dets, default=dets[0], required=True, label="Masks field",
                description="Class-agnostic masks (fo.Detections with instance masks)", view=types.DropdownView())
    inputs.enum("mode", list(MODES), default="paper", label="Mode",
                description="paper: argmax assignment, background competes; official: the released code",
                view=types.RadioGroup())
    inputs.float("os_thresh", default=0.5, label="o_s threshold", description="mask share inside the class region")
    inputs.float("op_thresh", default=0.85, label="o_p threshold", description="class region share covered by the mask")
    inputs.bool("keep_ignore", default=False, label="Keep 255 pixels of the seed")
    inputs.str("out_field", default="sepl", required=True, label="Output field")
    inputs.bool("store_decisions", default=True, label="Store per-mask decisions (<output>_masks)")
    out = ctx.params.get("out_field") or "sepl"
    if ctx.dataset.has_field(out):
        inputs.view("exists", types.Notice(
            label=f"'{out}' exists: an identical earlier run resumes; otherwise tick overwrite"))
    inputs.bool("overwrite", default=False, label="Overwrite an existing output field")
    inputs.int("num_workers", default=0, label="Merge processes", description="0: all cores (same result for any)")
    return True


OPERATORS = [RefineWithSepl]
