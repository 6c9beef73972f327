"""Operator "Evaluate segmentation": per-sample mIoU, dataset IoU, before/after delta."""

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._progress import run_with_progress
from ._util import add_target_input, field_names, form_params, target_view


class EvaluateSegmentation(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="evaluate_segmentation",
            label="Evaluate segmentation (mIoU)",
            description="Per-sample mIoU, per-class IoU and confusion matrix against a ground truth",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_delegation(self, ctx):
        return ctx.params.get("delegate", False)

    def resolve_input(self, ctx):
        inputs = types.Object()
        if _evaluate_form(ctx, inputs):
            add_target_input(ctx, inputs)
            inputs.bool("delegate", default=False, label="Delegate")
        return types.Property(inputs, view=types.View(label="Evaluate segmentation"))

    def execute(self, ctx):
        from sepl.fo.evaluate import evaluate

        p = form_params(ctx)
        fields = ([p["baseline_field"]] if p.get("baseline_field") else []) + [p["pred_field"]]
        view = target_view(ctx)
        results = yield from run_with_progress(ctx, lambda progress: evaluate(
            view, fields, p["gt_field"], overwrite=p.get("overwrite", False),
            strict=not p.get("skip_bad", False), progress=progress, match_by=p.get("match_by", "index")))
        if not ctx.delegated:
            yield ctx.trigger("reload_dataset")
        return {r.key: r.miou() for r in results}


def _evaluate_form(ctx, inputs) -> bool:
    segs = field_names(ctx.dataset, fo.Segmentation)
    if len(segs) < 2:
        inputs.view("need", types.Warning(label="Evaluation needs a ground-truth and a prediction Segmentation field"))
        return False
    gt_default = "ground_truth" if "ground_truth" in segs else segs[0]
    inputs.enum("gt_field", segs, default=gt_default, required=True, label="Ground truth",
                view=types.DropdownView())
    gt = ctx.params.get("gt_field") or gt_default
    preds = [s for s in segs if s != gt]
    inputs.enum("pred_field", preds, required=True, label="Prediction field",
                description="e.g. the SEPL output", view=types.DropdownView())
    inputs.enum("baseline_field", preds, required=False, label="Compare with (before)",
                description="optional: e.g. the seeds; stores <prediction>_delta per sample",
                view=types.DropdownView())
    inputs.enum("match_by", ["index", "name"], default="index", label="Match classes by",
                description="index: value k is GT class k (fields naming classes differently are refused); "
                            "name: map the prediction's classes to the GT's by name")
    inputs.bool("skip_bad", default=False, label="Skip samples that cannot be scored without failing")
    inputs.bool("overwrite", default=False, label="Overwrite an evaluation made with other parameters")
    return True


OPERATORS = [EvaluateSegmentation]
