"""Operator "Evaluate segmentation": per-sample mIoU, dataset IoU, before/after delta."""

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._progress import run_operator
from ._util import add_target_input, field_names, form_params, library_warning, pct, target_view


class EvaluateSegmentation(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="evaluate_segmentation",
            label="Evaluate segmentation (mIoU)",
            description="Per-sample mIoU, per-class IoU and confusion matrix against a ground truth",
            icon="query_stats",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if not library_warning(inputs) and _evaluate_form(ctx, inputs):
            add_target_input(ctx, inputs, action="Evaluate")
        return types.Property(inputs, view=types.View(label="Evaluate segmentation (mIoU)"))

    def execute(self, ctx):
        p = form_params(ctx)
        view = target_view(ctx)
        return run_operator(ctx, lambda progress: _evaluate(view, p, progress), evaluate_outputs)

    def resolve_output(self, ctx):
        return evaluate_outputs(ctx.results or {})


def _evaluate(view, p, progress):
    from sepl.fo.evaluate import evaluate
    from sepl.fo.panel_data import iou_table

    fields = ([p["baseline_field"]] if p.get("baseline_field") else []) + [p["pred_field"]]
    if not isinstance(view, fo.Dataset):
        # freeze the target samples: re-evaluating deletes the old score fields, which the view
        # may filter or sort by (the demo's worst-samples view does)
        view = view._dataset.select(view.values("id"), ordered=True)
    results = evaluate(view, fields, p["gt_field"], overwrite=p.get("overwrite", False),
                       strict=not p.get("skip_bad", False), progress=progress, match_by=p.get("match_by", "index"))
    keys = [r.key for r in results]
    class_iou = {r.key: {c: (None if v != v else v) for c, v in r.class_iou().items()} for r in results}
    mious = {r.key: r.miou() for r in results}
    skipped = sum(len(r.failures) for r in results)
    last = keys[-1]
    lines = [f"**Evaluation `{last}` of `{p['pred_field']}` against `{p['gt_field']}`**", ""]
    for r in results:
        lines.append(f"- `{r.key}`: dataset mIoU **{pct(r.miou())}%** over {r.num_samples} samples"
                     + (f" ({len(r.failures)} skipped)" if r.failures else ""))
    lines += ["", f"Per sample: `{last}_miou`" + (f", `{last}_delta` (after - before)" if len(keys) == 2 else "")
              + f", `{last}_class_iou`. Per-class IoU in %:", "", iou_table(class_iou, mious)]
    return dict(eval_keys=keys, miou=mious[last], baseline_miou=mious[keys[0]] if len(keys) == 2 else None,
                class_iou=class_iou, skipped=skipped, summary="\n".join(lines))


def evaluate_outputs(results):
    outputs = types.Object()
    outputs.str("summary", label="Result", view=types.MarkdownView(read_only=True))
    iou = results.get("class_iou")
    if iou:
        from sepl.fo.panel_data import class_iou_bars

        outputs.plot("class_iou_plot", height=340, label="Per-class IoU (%)", data=class_iou_bars(iou),
                     layout={"barmode": "group", "yaxis": {"range": [0, 100], "title": "IoU (%)"}, "height": 320,
                             "showlegend": True, "legend": {"orientation": "h", "y": 1.12}})
    return types.Property(outputs, view=types.View(label="Evaluate segmentation: result"))


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
    pred_default = "sepl" if "sepl" in preds else None
    inputs.enum("pred_field", preds, default=pred_default, required=True, label="Prediction field",
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
