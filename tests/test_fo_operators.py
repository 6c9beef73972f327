"""The plugin's operators through FiftyOne's operator executor: immediate (from Python and
as the App runs them), delegated, and what their results show."""

from pathlib import Path

import numpy as np
import pytest
from fiftyone.operators.executor import ExecutionError

from sepl.synth import SYNTH_CLASSES

from test_fo_pipeline import make_inputs  # tests/ is on sys.path (no package)

REPO = Path(__file__).resolve().parent.parent
URI = "@sepl/sepl/"


@pytest.fixture
def plugin(monkeypatch, tmp_path):
    """FiftyOne sees this checkout (only) as its plugins dir."""
    import fiftyone as fo

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "sepl").symlink_to(REPO, target_is_directory=True)
    monkeypatch.setenv("FIFTYONE_PLUGINS_DIR", str(plugins))
    monkeypatch.setattr(fo.config, "plugins_dir", str(plugins))
    return plugins


@pytest.fixture
def ds(dataset, synth_voc, tmp_path, rng):
    from sepl.fo import importers

    seeds, masks = make_inputs(synth_voc, tmp_path / "inputs", rng)
    importers.import_voc(synth_voc, dataset=dataset, classes=SYNTH_CLASSES)
    importers.import_seeds(dataset, seeds, "seeds")
    importers.import_masks(dataset, masks, "sam")
    return dataset


def _run(ds, name, params, view=None, selected=None, delegate=False, app=False):
    """``execute_operator``; ``app=True`` sends the request keys the App sends, so the
    operator streams progress and shows its output as it does in the App."""
    import fiftyone.operators as foo

    ctx = dict(dataset=ds, view=view if view is not None else ds.view(), params=params)
    if selected:
        ctx["selected"] = selected
    if app:
        ctx.update(current_sample=None, filters={}, extended=None)
    return foo.execute_operator(URI + name, ctx=ctx, request_delegation=delegate)


def _requests(res, operator):
    return [r for r in res.executor._requests if r.operator_uri.split("/")[-1] == operator]


def _shown(res):
    """The results an App-style run put in its dialog (``ctx.ops.show_output``)."""
    shown = _requests(res, "show_output")
    assert len(shown) == 1, [r.operator_uri for r in res.executor._requests]
    return shown[0].params["results"], shown[0].params["outputs"]


def _run_queued(ds):
    from fiftyone.operators.delegated import DelegatedOperationService

    svc = DelegatedOperationService()
    queued = svc.list_operations(dataset_name=ds.name, run_state="queued")
    assert queued, "nothing was queued"
    svc.execute_queued_operations(dataset_name=ds.name)
    ops = svc.list_operations(dataset_name=ds.name)
    return svc, ops


def test_operators_are_listed(plugin):
    import fiftyone.operators as foo

    ops = {o.config.name: o for o in foo.list_operators() if o.plugin_name == "@sepl/sepl"}
    assert {"refine_with_sepl", "evaluate_segmentation", "show_worst_samples", "sepl_panel", "miou"} <= set(ops)
    # evaluation metrics are named as the Model Evaluation panel shows them ("mIoU")
    ops = {n: o for n, o in ops.items() if not isinstance(o, foo.EvaluationMetric)}
    labels = [o.config.label for o in ops.values()]
    # one style: sentence case, no "sepl:" prefixes; every operator has an icon
    assert not [label for label in labels if label.lower().startswith("sepl:")], labels
    assert all(label[0].isupper() for label in labels), labels
    assert all(o.config.icon for o in ops.values()), [n for n, o in ops.items() if not o.config.icon]


def test_refine_evaluate_worst_immediate_on_selection(plugin, ds):
    from sepl.fo.convert import load_label_map

    chosen = ds.take(3, seed=1).values("id")
    res = _run(ds, "refine_with_sepl", dict(seed_field="seeds", masks_field="sam", out_field="sepl",
                                            view_target="SELECTED_SAMPLES"), selected=chosen)
    assert res.error is None and res.result["written"] == 3 and res.result["resumed"] == 0
    assert sorted(ds.exists("sepl").values("id")) == sorted(chosen)
    assert all(len(s.sepl_masks) == len(s.sam) for s in ds.exists("sepl"))
    # the rest of the view, resuming the same run
    res = _run(ds, "refine_with_sepl", dict(seed_field="seeds", masks_field="sam", out_field="sepl"))
    assert res.error is None and len(ds.exists("sepl")) == len(ds)
    assert res.result["written"] == len(ds) - 3 and res.result["resumed"] == 3 and res.result["failed"] == 0
    # a different configuration must not overwrite without being asked
    before = load_label_map(ds.first(), "sepl").copy()
    with pytest.raises(ExecutionError, match="already exists"):
        _run(ds, "refine_with_sepl", dict(seed_field="seeds", masks_field="sam", out_field="sepl", op_thresh=0.95))
    assert np.array_equal(load_label_map(ds.first(), "sepl"), before)

    res = _run(ds, "evaluate_segmentation", dict(gt_field="ground_truth", pred_field="sepl",
                                                 baseline_field="seeds"))
    assert res.error is None and res.result["eval_keys"] == ["seeds", "sepl"]
    assert res.result["miou"] == pytest.approx(ds.load_evaluation_results("sepl").miou())
    assert len(ds.exists("sepl_miou")) == len(ds) and ds.has_field("sepl_delta")
    res = _run(ds, "show_worst_samples", dict(eval_key="sepl", by="delta", limit=3))
    assert res.error is None
    expected = sorted(zip(ds.values("sepl_delta"), [Path(p).stem for p in ds.values("filepath")]))[:3]
    assert res.result["ids"] == [sid for _, sid in expected]
    assert set(res.result["class_iou"]) == set(SYNTH_CLASSES)
    # the grid shows what is ranked: the evaluated field and its score, not the demo's defaults
    (active,) = _requests(res, "set_active_fields")
    assert active.params["fields"] == ["sepl", "sepl_delta"]
    assert len(_requests(res, "set_view")) == 1


def test_refine_in_the_app_shows_progress_and_results(plugin, ds):
    """As the App runs it: progress triggers while it works, then the dialog shows samples
    written / resumed / failed and, scored against the ground truth, mIoU before/after."""
    res = _run(ds, "refine_with_sepl", dict(seed_field="seeds", masks_field="sam", out_field="sepl",
                                            gt_field="ground_truth"), app=True)
    assert res.error is None
    names = [r.operator_uri.split("/")[-1] for r in res.executor._requests]
    assert names[0] == "set_progress" and names[-2:] == ["reload_dataset", "show_output"], names
    assert _requests(res, "set_progress")[-1].params["progress"] == pytest.approx(1.0)
    results, outputs = _shown(res)
    assert results["written"] == len(ds) and results["resumed"] == 0 and results["failed"] == 0
    # the figures match a stored evaluation of the same fields (and nothing was stored)
    assert not ds.has_evaluation("sepl")
    from sepl.fo.evaluate import evaluate

    seeds, sepl = evaluate(ds, ["seeds", "sepl"], "ground_truth")
    assert results["seed_miou"] == pytest.approx(seeds.miou()) and results["miou"] == pytest.approx(sepl.miou())
    assert results["class_iou"]["after"]["background"] == pytest.approx(sepl.class_iou()["background"])
    text = results["summary"]
    assert f"samples written: **{len(ds)}**" in text
    # one unit convention: percent with one decimal in text
    assert f"{100 * seeds.miou():.1f}% before, {100 * sepl.miou():.1f}% after" in text
    props = outputs["type"]["properties"]
    assert props["summary"]["view"]["name"] == "MarkdownView" and "class_iou_plot" in props
    bars = props["class_iou_plot"]["view"]["data"]
    assert [b["name"] for b in bars] == ["before", "after"]
    assert max(v for b in bars for v in b["y"] if v is not None) > 1  # percent, not fractions


def test_evaluate_in_the_app_shows_miou(plugin, ds):
    from sepl.fo.refine import refine

    refine(ds, "seeds", "sam", "sepl")
    res = _run(ds, "evaluate_segmentation", dict(gt_field="ground_truth", pred_field="sepl",
                                                 baseline_field="seeds"), app=True)
    results, outputs = _shown(res)
    miou = ds.load_evaluation_results("sepl").miou()
    assert results["miou"] == pytest.approx(miou)
    assert f"dataset mIoU **{100 * miou:.1f}%**" in results["summary"]
    assert set(results["class_iou"]) == {"seeds", "sepl"}
    assert "class_iou_plot" in outputs["type"]["properties"]
    # again on a view that filters and sorts by the score fields the rerun replaces
    worst = ds.exists("sepl_miou").sort_by("sepl_miou")
    res = _run(ds, "evaluate_segmentation", dict(gt_field="ground_truth", pred_field="sepl"), view=worst,
               app=True)
    results, _ = _shown(res)
    assert results["eval_keys"] == ["sepl"] and len(ds.exists("sepl_miou")) == len(ds)


def test_refine_and_evaluate_delegated(plugin, ds):
    from fiftyone.operators.executor import ExecutionRunState

    res = _run(ds, "refine_with_sepl", dict(seed_field="seeds", masks_field="sam", out_field="sepl"), delegate=True)
    assert res.error is None and res.delegated
    assert not ds.has_field("sepl") or len(ds.exists("sepl")) == 0  # queued, not run yet
    svc, ops = _run_queued(ds)
    assert [o.run_state for o in ops] == [ExecutionRunState.COMPLETED], [o.run_state for o in ops]
    ds.reload()
    assert len(ds.exists("sepl")) == len(ds)
    assert ops[0].status is not None and ops[0].status.progress == pytest.approx(1.0)
    # the run keeps its results, and the schema FiftyOne shows them with in the Runs panel
    assert ops[0].result.result["written"] == len(ds)
    assert "summary" in ops[0].metadata["outputs_schema"]["type"]["properties"]

    res = _run(ds, "evaluate_segmentation", dict(gt_field="ground_truth", pred_field="sepl"), delegate=True)
    assert res.delegated
    svc.execute_queued_operations(dataset_name=ds.name)
    ds.reload()
    assert ds.has_evaluation("sepl") and len(ds.exists("sepl_miou")) == len(ds)
    for op in svc.list_operations(dataset_name=ds.name):
        svc.delete_operation(op.id)


def test_execution_options_are_fiftyones(plugin, dataset):
    """Immediate or delegated is FiftyOne's own choice (Execute / Schedule in the App), with
    Schedule first for the long runs; no operator forces it with a checkbox of its own."""
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionContext

    ctx = ExecutionContext(request_params=dict(dataset_name=dataset.name, params={}))
    long_runs = {"generate_masks", "train_deeplab", "train_cam_network", "grounded_sam_pseudo_labels"}
    for op in foo.list_operators():
        if op.plugin_name != "@sepl/sepl" or op.config.name == "sepl_panel":
            continue
        opts = op.resolve_execution_options(ctx)
        assert opts.allow_immediate_execution, op.config.name
        if op.config.name in long_runs:
            assert opts.allow_delegated_execution and opts.default_choice_to_delegated, op.config.name
    for name in long_runs | {"refine_with_sepl", "evaluate_segmentation", "generate_cam_seeds"}:
        form = foo.get_operator(URI + name).resolve_input(ExecutionContext(
            request_params=dict(dataset_name=dataset.name, params={})))
        assert "delegate" not in form.type.properties, name


def test_refine_operator_reports_bad_samples(plugin, ds):
    first = ds.first()
    first.seeds = None
    first.save()
    res = _run(ds, "refine_with_sepl", dict(seed_field="seeds", masks_field="sam", out_field="sepl"))
    assert res.result["failed"] == 1 and res.result["written"] == len(ds) - 1
    assert first.id in res.result["failures"] and "failed: **1**" in res.result["summary"]
    assert len(ds.exists("sepl")) == len(ds) - 1


def test_forms_guide_the_user(plugin, dataset, tmp_path):
    """With no fields to work on, the forms say what is missing instead of failing."""
    import fiftyone as fo
    import fiftyone.operators as foo

    dataset.add_sample(fo.Sample(filepath=str(tmp_path / "a.jpg")))
    for name in ("refine_with_sepl", "evaluate_segmentation", "show_worst_samples"):
        # the form only shows a warning, so the call fails on the missing inputs, writing nothing
        with pytest.raises(ExecutionError, match="form has no value for"):
            foo.execute_operator(URI + name, ctx=dict(dataset=dataset, params={}))
    assert set(dataset.get_field_schema()) >= {"filepath"}


def test_forms_use_fiftyones_view_target(plugin, ds):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionContext
    from fiftyone.operators.types import ViewTargetProperty

    ctx = ExecutionContext(request_params=dict(dataset_name=ds.name, view=ds.limit(2)._serialize(),
                                               selected=ds.take(1).values("id"), params={}))
    form = foo.get_operator(URI + "refine_with_sepl").resolve_input(ctx)
    prop = form.type.properties["view_target"]
    assert isinstance(prop, ViewTargetProperty) and "target" not in form.type.properties
    choices = prop.type.values
    assert {"DATASET", "CURRENT_VIEW", "SELECTED_SAMPLES"} <= set(choices)
