"""Operator "Show worst samples": lowest per-sample mIoU (or delta) first, with plots."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._util import add_target_input, form_params, library_warning, pct, require_library, target_view


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
            icon="trending_down",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if library_warning(inputs):
            return types.Property(inputs)
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
        add_target_input(ctx, inputs, action="Rank")
        return types.Property(inputs, view=types.View(label="Show worst samples (lowest mIoU first)"))

    def execute(self, ctx):
        require_library()
        from sepl.fo.views import score_field, worst_ids, worst_samples

        p = form_params(ctx)
        view = target_view(ctx)
        key, by, limit = p["eval_key"], p.get("by", "miou"), p.get("limit") or None
        worst = worst_samples(view, key, by=by, limit=limit)
        field = score_field(view, key, by)
        pred = ctx.dataset.get_evaluation_info(key).config.pred_field
        ctx.ops.set_view(view=worst)
        # the grid overlays what is ranked: the evaluated prediction and its score
        ctx.ops.set_active_fields(fields=[pred, field])
        results = ctx.dataset.load_evaluation_results(key)
        scores = [v for v in view.values(field) if v is not None]
        ids = worst_ids(view, key, by=by, limit=limit or 10 ** 9)
        ranked = worst.values(field)
        lines = [f"**Worst samples of `{key}` by `{field}`**", "",
                 f"Dataset mIoU of `{pred}`: **{pct(results.miou())}%**; the grid now shows `{pred}` and "
                 f"`{field}`, lowest first ({len(ranked)} samples).", ""]
        lines += [f"{i + 1}. {sid}: {_score_text(v, by)}" for i, (sid, v) in enumerate(zip(ids[:20], ranked[:20]))]
        return {
            "ids": ids,
            "miou": results.miou(),
            "class_iou": {c: (None if v != v else v) for c, v in results.class_iou().items()},
            "scores": scores,
            "field": field,
            "summary": "\n".join(lines),
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        res = ctx.results or {}
        outputs.str("summary", label="Result", view=types.MarkdownView(read_only=True))
        iou = res.get("class_iou") or {}
        outputs.plot("class_iou_plot", height=340, label="Per-class IoU (%)", data=[{
            "type": "bar", "x": list(iou), "y": [100 * v if v is not None else 0 for v in iou.values()]}],
            layout={"yaxis": {"range": [0, 100], "title": "IoU (%)"}, "height": 320})
        field = res.get("field", "score")
        outputs.plot("hist_plot", height=300, label=f"Per-sample {field} (%)", data=[{
            "type": "histogram", "x": [100 * v for v in res.get("scores", [])], "nbinsx": 20}],
            layout={"height": 280, "xaxis": {"title": f"{field} (%)"}, "yaxis": {"title": "samples"}})
        outputs.list("ids", types.String(), label="Worst samples (file stems)")
        return types.Property(outputs, view=types.View(label="Show worst samples: result"))


def _score_text(value, by):
    if value is None:
        return "-"
    return f"{100 * value:+.1f} points" if by == "delta" else f"mIoU {pct(value)}%"


OPERATORS = [ShowWorstSamples]
