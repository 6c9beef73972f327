"""The SEPL panel's data (sepl.fo.panel_data) and the panel's event handlers, without the App."""

from pathlib import Path

import numpy as np
import pytest

from sepl.synth import SYNTH_CLASSES

from test_fo_pipeline import make_inputs  # tests/ is on sys.path (no package)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def scored(dataset, synth_voc, tmp_path, rng):
    """Seeds, masks, SEPL labels (with decisions) and both evaluated, plus a native FiftyOne
    segmentation evaluation of the seeds."""
    import fiftyone as fo

    from sepl.fo import importers
    from sepl.fo.evaluate import evaluate
    from sepl.fo.refine import refine

    seeds, masks = make_inputs(synth_voc, tmp_path / "inputs", rng)
    importers.import_voc(synth_voc, dataset=dataset, classes=SYNTH_CLASSES)
    importers.import_seeds(dataset, seeds, "seeds")
    importers.import_masks(dataset, masks, "sam")
    refine(dataset, "seeds", "sam", "sepl")
    evaluate(dataset, ["seeds", "sepl"], "ground_truth")
    fo.utils.eval.segmentation.evaluate_segmentations(
        dataset, "seeds", gt_field="ground_truth", eval_key="native_seeds",
        mask_targets=dataset.mask_targets["ground_truth"])
    return dataset


def test_pct_one_convention():
    from sepl.fo.panel_data import pct

    assert pct(0.781062478100682) == "78.1" and pct(1.0) == "100.0"
    assert pct(None) == "-" and pct(float("nan")) == "-"


def test_class_iou_of_sepl_and_native_evaluations_agree(scored):
    from sepl.fo.panel_data import class_iou_bars, evaluation_class_iou, segmentation_evaluations

    keys = segmentation_evaluations(scored)
    assert set(keys) == {"seeds", "sepl", "native_seeds"}
    sepl = evaluation_class_iou(scored, "seeds")
    native = evaluation_class_iou(scored, "native_seeds")
    # the same field scored by FiftyOne's own evaluation: the same per-class IoU from its matrix
    assert set(native) == set(SYNTH_CLASSES)
    for c in SYNTH_CLASSES:
        assert native[c] == pytest.approx(sepl[c], abs=1e-9), c
    bars = class_iou_bars({k: evaluation_class_iou(scored, k) for k in keys})
    assert [b["name"] for b in bars] == keys and bars[0]["x"] == list(SYNTH_CLASSES)
    assert bars[0]["y"][0] == pytest.approx(100 * sepl["background"], abs=0.01)


def test_histogram_and_bin_views(scored):
    from sepl.fo.panel_data import bin_view, miou_histogram

    hist = miou_histogram(scored.view(), "sepl", bins=10)
    scores = np.asarray(scored.values("sepl_miou"), float)
    assert sum(hist["counts"]) == len(scored) and hist["missing"] == 0
    assert len(hist["edges"]) == 11
    # every sample falls in exactly one bin, and clicking the bin gives exactly those samples
    got = []
    for i in range(10):
        lo, hi = hist["edges"][i], hist["edges"][i + 1]
        view = bin_view(scored.view(), "sepl", lo, hi)
        assert len(view) == hist["counts"][i]
        vals = view.values("sepl_miou")
        assert vals == sorted(vals) and all(lo <= v <= hi for v in vals)
        got += view.values("id")
    assert sorted(got) == sorted(scored.values("id"))
    assert np.histogram(np.clip(scores, 0, 1), bins=np.linspace(0, 1, 11))[0].tolist() == hist["counts"]


def test_class_view_sepl_and_native(scored):
    from sepl.fo.panel_data import class_view

    cls = SYNTH_CLASSES[1]
    view = class_view(scored.view(), "sepl", cls)
    per = [d.get(cls) if d else None for d in scored.values("sepl_class_iou")]
    assert len(view) == sum(v is not None for v in per) > 0
    vals = [d[cls] for d in view.values("sepl_class_iou")]
    assert vals == sorted(vals)
    # a native evaluation has no per-sample class IoU: the samples whose GT holds the class
    native = class_view(scored.view(), "native_seeds", cls)
    idx = SYNTH_CLASSES.index(cls)
    expected = [s.id for s in scored if (s.ground_truth.get_mask() == idx).any()]
    assert sorted(native.values("id")) == sorted(expected)


def test_decision_summary_counts_and_cam_fallback(scored):
    from sepl.fo.convert import load_label_map, load_masks
    from sepl.fo.panel_data import decision_summary, decisions_table, refine_runs

    (run,) = refine_runs(scored)
    assert run == dict(out_field="sepl", decisions_field="sepl_masks", seed_field="seeds", masks_field="sam")
    summary = decision_summary(scored.view(), "sepl", "sepl_masks")
    assert len(summary["rows"]) == len(scored)
    for row, sample in zip(summary["rows"], scored):
        dets = sample.sepl_masks.detections
        assert row["taken"] == sum(bool(d["selected"]) for d in dets)
        assert row["rejected"] == sum(d["reason"] == "rejected" for d in dets)
        assert row["background"] == sum(d["reason"] == "background" for d in dets)
        assert sum(row[k] for k in ("taken", "rejected", "background", "unused")) == len(dets)
        # fallback, from scratch: foreground pixels of the output under no taken mask
        out = load_label_map(sample, "sepl")
        masks = load_masks(sample, "sepl_masks")
        taken = np.array([bool(d["selected"]) for d in dets])
        covered = masks[taken].any(0) if taken.any() else np.zeros(out.shape, bool)
        fg = out > 0
        expected = (fg & ~covered).sum() / fg.sum() if fg.any() else None
        assert row["cam_fallback"] == pytest.approx(expected)
    table = decisions_table(summary)
    assert table.count("\n") == len(scored) + 2 and "CAM fallback" in table


def test_rejected_masks_name_their_class(scored):
    dets = [d for s in scored for d in s.sepl_masks.detections if d["reason"] == "rejected"]
    assert dets, "the synthetic masks have rejected ones"
    assert all(d["class_name"] in SYNTH_CLASSES for d in dets)


def test_iou_table_markdown():
    from sepl.fo.panel_data import iou_table

    text = iou_table({"seeds": {"a": 0.5, "b": None}, "sepl": {"a": 0.625, "b": 0.1}}, {"seeds": 0.5, "sepl": 0.3625})
    lines = text.splitlines()
    assert lines[0] == "| class | seeds | sepl | change |"
    assert lines[2] == "| a | 50.0 | 62.5 | +12.5 |" and lines[3] == "| b | - | 10.0 | - |"
    assert lines[4] == "| **mIoU** | 50.0 | 36.2 | -13.8 |"


class _Ctx:
    """What the panel's handlers use of an ExecutionContext: dataset, view, params, panel, ops."""

    def __init__(self, dataset, params=None):
        from fiftyone.operators.executor import ExecutionContext

        self._real = ExecutionContext(request_params=dict(dataset_name=dataset.name, params={}))
        self.dataset, self.view, self.params = dataset, dataset.view(), params or {}
        self.state, self.data, self.calls = {}, {}, []
        ctx = self

        class Panel:
            def set_state(self, k, v=None):
                ctx.state[k] = v

            def get_state(self, k, default=None):
                return ctx.state.get(k, default)

            def set_data(self, k, v=None):
                ctx.data[k] = v

            @property
            def state(self):
                return type("S", (), {"__getattr__": lambda s, k: ctx.state.get(k)})()

        class Ops:
            def __getattr__(self, name):
                return lambda **kw: ctx.calls.append((name, kw))

        self.panel, self.ops = Panel(), Ops()


def test_panel_handlers_set_views(plugin_dir, scored):
    import fiftyone.operators as foo
    from fiftyone import DatasetView

    panel = foo.get_operator("@sepl/sepl/sepl_panel")
    ctx = _Ctx(scored)
    panel.on_load(ctx)
    assert set(ctx.state["keys"]) == {"seeds", "sepl", "native_seeds"}
    assert len(ctx.data["class_iou"]) == 3 and ctx.data["histogram"][0]["type"] == "bar"
    assert ctx.state["run"] == "sepl" and "CAM fallback" in ctx.state["decisions_md"]
    rendered = panel.render(ctx).to_json()["type"]["properties"]
    assert {"class_iou", "histogram", "decisions", "miou"} <= set(rendered)

    # a class bar -> set_view with that evaluation's samples of the class
    key_idx = ctx.state["keys"].index("sepl")
    ctx.params = dict(x=SYNTH_CLASSES[1], trace_idx=key_idx, trace="sepl")
    panel.on_click_class(ctx)
    (name, kw), (name2, kw2) = [c for c in ctx.calls if c[0] in ("set_view", "set_active_fields")][-2:]
    assert name == "set_view" and isinstance(kw["view"], DatasetView) and len(kw["view"]) > 0
    assert name2 == "set_active_fields" and kw2["fields"] == ["sepl", "sepl_miou"]
    # a histogram bin -> the samples in it
    hist = ctx.data["histogram"][0]
    idx = int(np.argmax(hist["y"]))
    ctx.params = dict(idx=idx, x=hist["x"][idx])
    panel.on_click_bin(ctx)
    name, kw = [c for c in ctx.calls if c[0] == "set_view"][-1]
    assert name == "set_view" and len(kw["view"]) == hist["y"][idx]
    # the decisions table follows the samples shown
    assert f"on {hist['y'][idx]} samples of the current view" in ctx.state["decisions_md"]


@pytest.fixture
def plugin_dir(monkeypatch, tmp_path):
    import fiftyone as fo

    d = tmp_path / "plugins"
    d.mkdir()
    (d / "sepl").symlink_to(REPO, target_is_directory=True)
    monkeypatch.setenv("FIFTYONE_PLUGINS_DIR", str(d))
    monkeypatch.setattr(fo.config, "plugins_dir", str(d))
    return d


def test_score_labels_name_the_numbers(scored):
    from sepl.fo.app import write_score_labels

    field = write_score_labels(scored, {"seeds": ("seeds_miou", "pct"), "SEPL": ("sepl_miou", "pct"),
                                        "change": ("sepl_delta", "delta")})
    for s in scored:
        labels = [c.label for c in s[field].classifications]
        assert labels == [f"seeds {100 * s.seeds_miou:.1f}%", f"SEPL {100 * s.sepl_miou:.1f}%",
                          f"change {100 * s.sepl_delta:+.1f}"]
