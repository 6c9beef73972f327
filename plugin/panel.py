"""The SEPL panel: evaluations side by side, the per-sample mIoU histogram and the mask
decisions of a SEPL run; click a class bar or a histogram bin to see its samples.

The figures come from ``sepl.fo.panel_data`` (tested without the App); this module only
lays them out and turns clicks into ``ctx.ops.set_view``.
"""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._util import library_problem, INSTALL_HINT

BINS = 10


class SeplPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name="sepl_panel",
            label="SEPL",
            icon="insights",
            surfaces="grid",
            help_markdown="Per-class IoU of the dataset's segmentation evaluations side by side, the per-sample "
                          "mIoU histogram and the mask decisions of a SEPL run. Click a bar to see its samples.",
        )

    # -- events ------------------------------------------------------------------------------

    def on_load(self, ctx):
        self._refresh(ctx)

    def on_change_dataset(self, ctx):
        self._refresh(ctx)

    def on_change_view(self, ctx):
        self._refresh_decisions(ctx)

    def on_refresh(self, ctx):
        self._refresh(ctx)

    def on_change_hist_key(self, ctx):
        ctx.panel.set_state("hist_key", ctx.params.get("value"))
        self._refresh_histogram(ctx)

    def on_change_run(self, ctx):
        ctx.panel.set_state("run", ctx.params.get("value"))
        self._refresh_decisions(ctx)

    def on_click_class(self, ctx):
        """A bar of the per-class chart: that evaluation's samples holding the class,
        lowest IoU of the class first."""
        from sepl.fo.panel_data import class_view

        keys = ctx.panel.get_state("keys") or []
        idx = ctx.params.get("trace_idx")
        key = keys[idx] if isinstance(idx, int) and 0 <= idx < len(keys) else ctx.params.get("trace")
        cls = ctx.params.get("x")
        if not key or cls is None:
            return
        view = class_view(ctx.dataset.view(), key, str(cls))
        self._show(ctx, view, key, f"'{cls}' in {key}: {len(view)} samples, lowest IoU first")

    def on_click_bin(self, ctx):
        """A bin of the histogram: the samples whose mIoU lies in it, lowest first."""
        from sepl.fo.panel_data import bin_view

        key = ctx.panel.get_state("hist_key")
        idx = ctx.params.get("idx")
        if key is None or not isinstance(idx, int):
            return
        lo, hi = idx / BINS, (idx + 1) / BINS
        view = bin_view(ctx.dataset.view(), key, lo, hi)
        self._show(ctx, view, key, f"{key} mIoU in [{100 * lo:.0f}%, {100 * hi:.0f}%"
                   + ("]" if hi >= 1 else ")") + f": {len(view)} samples")

    def on_show_all(self, ctx):
        ctx.ops.clear_view()
        ctx.panel.set_state("selection_text", "")

    # -- computing -----------------------------------------------------------------------------

    def _show(self, ctx, view, key, text):
        ctx.ops.set_view(view=view)
        pred = ctx.dataset.get_evaluation_info(key).config.pred_field
        fields = [pred] + [f for f in (f"{key}_miou",) if ctx.dataset.has_field(f)]
        ctx.ops.set_active_fields(fields=fields)
        ctx.panel.set_state("selection_text", text)
        self._refresh_decisions(ctx, view)  # of the samples just shown (ctx.view is still the old view)

    def _refresh(self, ctx):
        problem = library_problem()
        ctx.panel.set_state("problem", problem)
        if problem:
            return
        from sepl.fo.panel_data import (class_iou_bars, evaluation_class_iou, evaluation_miou, pct,
                                        refine_runs, segmentation_evaluations)

        ds = ctx.dataset
        keys = segmentation_evaluations(ds)
        series = {k: evaluation_class_iou(ds, k) for k in keys}
        ctx.panel.set_state("keys", keys)
        ctx.panel.set_state("miou_text", " | ".join(f"**{k}** {pct(evaluation_miou(v))}%" for k, v in series.items()))
        ctx.panel.set_data("class_iou", class_iou_bars(series))
        scored = [k for k in keys if ds.has_field(f"{k}_miou")]
        ctx.panel.set_state("hist_keys", scored)
        if ctx.panel.get_state("hist_key") not in scored:
            ctx.panel.set_state("hist_key", scored[-1] if scored else None)
        runs = [r["out_field"] for r in refine_runs(ds)]
        ctx.panel.set_state("runs", runs)
        if ctx.panel.get_state("run") not in runs:
            ctx.panel.set_state("run", runs[-1] if runs else None)
        self._refresh_histogram(ctx)
        self._refresh_decisions(ctx)

    def _refresh_histogram(self, ctx):
        from sepl.fo.panel_data import histogram_trace, miou_histogram

        key = ctx.panel.get_state("hist_key")
        if key and not library_problem():
            hist = miou_histogram(ctx.dataset.view(), key, bins=BINS)
            ctx.panel.set_data("histogram", [histogram_trace(hist, key)])
            ctx.panel.set_state("hist_note", f"{sum(hist['counts'])} samples scored"
                                + (f", {hist['missing']} without a score" if hist["missing"] else ""))

    def _refresh_decisions(self, ctx, view=None):
        if library_problem():
            return
        from sepl.fo.panel_data import decision_summary, decisions_table, refine_runs

        run = ctx.panel.get_state("run")
        info = next((r for r in refine_runs(ctx.dataset) if r["out_field"] == run), None)
        if info is None:
            ctx.panel.set_state("decisions_md", "No SEPL run with stored mask decisions yet: run "
                                                "**Refine with SEPL** with *Store per-mask decisions*.")
            return
        view = (ctx.view if view is None else view).exists(info["out_field"])
        summary = decision_summary(view, info["out_field"], info["decisions_field"], limit=25)
        ctx.panel.set_state("decisions_md", f"Mask decisions of `{info['out_field']}` (`{info['decisions_field']}`) "
                                            f"on {len(summary['rows'])} samples of the current view (at most 25). "
                                            "CAM fallback: the share of the output's foreground that no taken "
                                            "mask covers (the seed was kept).\n\n" + decisions_table(summary))

    # -- layout --------------------------------------------------------------------------------

    def render(self, ctx):
        panel = types.Object()
        state = ctx.panel.state
        problem = state.problem
        if problem:
            panel.md(f"**The sepl library is not installed**: {problem}. {INSTALL_HINT}", name="problem_md")
            return types.Property(panel, view=types.GridView(orientation="vertical"))
        keys = state.keys or []
        panel.btn("refresh", label="Refresh", icon="refresh", on_click=self.on_refresh)
        if not keys:
            panel.md("No segmentation evaluation on this dataset yet: run **Evaluate segmentation (mIoU)** "
                     "(or `sepl evaluate`), then Refresh.", name="empty")
            return types.Property(panel, view=types.GridView(orientation="vertical"))
        panel.md(f"**Dataset mIoU**: {state.miou_text}", name="miou")
        panel.plot("class_iou", height=360, label="Per-class IoU (%): click a bar for its samples", on_click=self.on_click_class,
                   layout={"barmode": "group", "height": 320, "yaxis": {"range": [0, 100], "title": "IoU (%)"},
                           "margin": {"t": 30, "b": 80}, "showlegend": True,
                           "legend": {"orientation": "h", "y": 1.12}})
        hist_keys = state.hist_keys or []
        if hist_keys:
            panel.enum("hist_key", hist_keys, default=state.hist_key, label="Per-sample mIoU of",
                       view=types.DropdownView(), on_change=self.on_change_hist_key)
            panel.plot("histogram", height=300, label=f"Per-sample mIoU (%): click a bin for its samples ({state.hist_note})",
                       on_click=self.on_click_bin,
                       layout={"height": 260, "bargap": 0.05, "xaxis": {"range": [0, 100], "title": "mIoU (%)"},
                               "yaxis": {"title": "samples"}, "margin": {"t": 30}})
        if state.selection_text:
            # a property named like a state key would show that value: distinct names
            panel.md(f"**Showing**: {state.selection_text}", name="selection_md")
            panel.btn("show_all", label="Show all samples", on_click=self.on_show_all)
        runs = state.runs or []
        if runs:
            panel.enum("run", runs, default=state.run, label="SEPL run", view=types.DropdownView(),
                       on_change=self.on_change_run)
        panel.md(state.decisions_md or "", name="decisions")
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=2))


PANELS = [SeplPanel]
