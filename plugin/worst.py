"""Operator "Show worst samples": lowest per-sample mIoU (or delta) first, with plots."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._util import add_target_input, form_params, target_view


def _sepl_evaluations(dataset):
    keys = []
    for key in dataset.list_evaluations():
        if getattr(dataset.get_evaluation_info(key).config, "method", None) == "sepl":
            keys.append(key)
    return keys


class ShowWorstSamples(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="show_worst_samples",
            label="Show worst samples (lowest mIoU first)",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        keys = _sepl_evaluations(ctx.dataset)
        if not keys:
            inputs.view("need", types.Warning(label="Run 'Evaluate segmentation (mIoU)' first"))
            return types.Property(inputs)
        inputs.enum("eval_key", keys, default=keys[-1], required=True, label="Evaluation",
                    view=types.DropdownView())
        key = ctx.params.get("eval_key") or keys[-1]
        bys = ["miou"] + (["delta"] if ctx.dataset.has_field(f"{key}_delta") else [])
        inputs.enum("by", bys, default="miou", label="Sort by", view=types.RadioGroup(),
                    description="delta: the samples the refinement harmed most")
        inputs.int("limit", default=50, label="How many (0 = all)")
        add_target_input(ctx, inputs)
        return types.Property(inputs, view=types.View(label="Show worst samples"))

    def execute(self, ctx):
        from sepl.fo.views import worst_ids, worst_samples

        p = form_params(ctx)
        view = target_view(ctx)
        key, by, limit = p["eval_key"], p.get("by", "miou"), p.get("limit") or None
        worst = worst_samples(view, key, by=by, limit=limit)
        ctx.ops.set_view(view=worst)
        results = ctx.dataset.load_evaluation_results(key)
        return {
            "ids": worst_ids(view, key, by=by, limit=limit or 10 ** 9),
            "miou": results.miou(),
            "class_iou": {c: (None if v != v else v) for c, v in results.class_iou().items()},
            "scores": [v for v in view.values(f"{key}_{by}") if v is not None],
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        res = ctx.results or {}
        outputs.float("miou", label="Dataset mIoU (all classes)")
        iou = res.get("class_iou") or {}
        outputs.plot("class_iou_plot", label="Per-class IoU", data=[{
            "type": "bar", "x": list(iou), "y": [v if v is not None else 0 for v in iou.values()]}],
            layout={"yaxis": {"range": [0, 1]}, "height": 320})
        outputs.plot("hist_plot", label="Per-sample score histogram", data=[{
            "type": "histogram", "x": res.get("scores", []), "nbinsx": 20}], layout={"height": 280})
        outputs.list("ids", types.String(), label="Worst samples (file stems)")
        return types.Property(outputs)


OPERATORS = [ShowWorstSamples]
