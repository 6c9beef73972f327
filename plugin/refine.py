"""Operator "Refine with SEPL": seeds + class-agnostic masks -> merged labels."""

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._progress import run_operator
from ._util import add_target_input, field_names, form_params, library_warning, target_view

MODES = ("paper", "official")


class RefineWithSepl(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="refine_with_sepl",
            label="Refine with SEPL",
            description="Merge CAM seeds with class-agnostic SAM masks into pseudo-labels",
            icon="auto_fix_high",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if not library_warning(inputs) and _refine_form(ctx, inputs):
            add_target_input(ctx, inputs, action="Refine")
        return types.Property(inputs, view=types.View(label="Refine with SEPL"))

    def execute(self, ctx):
        p = form_params(ctx)
        view = target_view(ctx)
        return run_operator(ctx, lambda progress: _refine(view, p, progress), refine_outputs)

    def resolve_output(self, ctx):
        return refine_outputs(ctx.results or {})


def _refine(view, p, progress):
    from sepl.errors import SeplError
    from sepl.fo.panel_data import iou_table, score_fields
    from sepl.fo.refine import refine

    out = p["out_field"]
    overwrite = p.get("overwrite", False)
    before = len(view.exists(out)) if view._dataset.has_field(out) and not overwrite else 0
    failure = None
    try:
        written = refine(view, p["seed_field"], p["masks_field"], out, mode=p.get("mode", "paper"),
                         os_thresh=p.get("os_thresh", 0.5), op_thresh=p.get("op_thresh", 0.85),
                         keep_ignore=p.get("keep_ignore", False), store_decisions=p.get("store_decisions", True),
                         overwrite=overwrite, num_workers=p.get("num_workers") or None, progress=progress)
    except SeplError as e:
        if "could not be processed" not in e.message:
            raise  # the run did not start (bad fields, existing output): nothing was written
        failure = str(e)
        view._dataset.reload()
        written = len(view.exists(out)) - before
    results = dict(out_field=out, written=written, resumed=before, failed=len(view) - before - written,
                   failures=failure or "")
    gt = p.get("gt_field")
    if gt:
        progress(1.0, f"scoring '{p['seed_field']}' and '{out}' against '{gt}'")
        scores = score_fields(view, [p["seed_field"], out], gt)
        seeds, sepl = scores[p["seed_field"]], scores[out]
        results.update(seed_miou=seeds["miou"], miou=sepl["miou"],
                       class_iou={"before": seeds["class_iou"], "after": sepl["class_iou"]},
                       table=iou_table({f"{p['seed_field']} (before)": seeds["class_iou"],
                                        f"{out} (after)": sepl["class_iou"]},
                                       {f"{p['seed_field']} (before)": seeds["miou"], f"{out} (after)": sepl["miou"]}))
    results["summary"] = _summary(results)
    return results


def _summary(results):
    from ._util import pct

    out = results["out_field"]
    text = (f"**Refine with SEPL wrote `{out}`**\n\n"
            f"- samples written: **{results.get('written', 0)}**\n"
            f"- resumed (already done): **{results.get('resumed', 0)}**\n"
            f"- failed: **{results.get('failed', 0)}**")
    if results.get("failures"):
        text += f"\n\n**Failures**: {results['failures']}"
    if results.get("table"):
        text += (f"\n\n**Dataset mIoU: {pct(results.get('seed_miou'))}% before, {pct(results.get('miou'))}% "
                 f"after** (per-class IoU in %, over the target samples)\n\n{results['table']}")
    return text


def refine_outputs(results):
    """The result dialog: counts, then (when scored) mIoU before/after and per-class IoU."""
    outputs = types.Object()
    outputs.str("summary", label="Result", view=types.MarkdownView(read_only=True))
    iou = results.get("class_iou")
    if iou:
        from sepl.fo.panel_data import class_iou_bars

        outputs.plot("class_iou_plot", height=340, label="Per-class IoU (%)",
                     data=class_iou_bars({"before": iou["before"], "after": iou["after"]}),
                     layout={"barmode": "group", "yaxis": {"range": [0, 100], "title": "IoU (%)"}, "height": 320,
                             "showlegend": True, "legend": {"orientation": "h", "y": 1.12}})
    return types.Property(outputs, view=types.View(label="Refine with SEPL: result"))


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
    inputs.int("num_workers", default=0, label="Merge processes", description="0: all cores, when the run is long enough to pay for starting them (same result for any)")
    gts = [s for s in segs if s != out and s != ctx.params.get("seed_field", seed_default)]
    if gts:
        gt_default = "ground_truth" if "ground_truth" in gts else None
        inputs.enum("gt_field", gts, default=gt_default, required=False, label="Score against (optional)",
                    description="a ground-truth field: the result shows mIoU and per-class IoU before and after "
                                "(nothing is stored; use Evaluate segmentation for that)",
                    view=types.DropdownView())
    return True


OPERATORS = [RefineWithSepl]
