"""The plugin's operators through FiftyOne's operator executor: immediate and delegated."""

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


def _run(ds, name, params, view=None, selected=None, delegate=False):
    import fiftyone.operators as foo

    ctx = dict(dataset=ds, view=view if view is not None else ds.view(), params=params)
    if selected:
        ctx["selected"] = selected
    return foo.execute_operator(URI + name, ctx=ctx, request_delegation=delegate)


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

    names = {o.config.name for o in foo.list_operators() if o.plugin_name == "@sepl/sepl"}
    assert {"refine_with_sepl", "evaluate_segmentation", "show_worst_samples"} <= names


def test_refine_evaluate_worst_immediate_on_selection(plugin, ds):
    from sepl.fo.convert import load_label_map

    chosen = ds.take(3, seed=1).values("id")
    res = _run(ds, "refine_with_sepl", dict(seed_field="seeds", masks_field="sam", out_field="sepl",
                                            target="SELECTED_SAMPLES"), selected=chosen)
    assert res.error is None
    assert sorted(ds.exists("sepl").values("id")) == sorted(chosen)
    assert all(len(s.sepl_masks) == len(s.sam) for s in ds.exists("sepl"))
    # the rest of the view, resuming the same run
    res = _run(ds, "refine_with_sepl", dict(seed_field="seeds", masks_field="sam", out_field="sepl"))
    assert res.error is None and len(ds.exists("sepl")) == len(ds)
    # a different configuration must not overwrite without being asked
    before = load_label_map(ds.first(), "sepl").copy()
    with pytest.raises(ExecutionError, match="already exists"):
        _run(ds, "refine_with_sepl", dict(seed_field="seeds", masks_field="sam", out_field="sepl", op_thresh=0.95))
    assert np.array_equal(load_label_map(ds.first(), "sepl"), before)

    res = _run(ds, "evaluate_segmentation", dict(gt_field="ground_truth", pred_field="sepl",
                                                 baseline_field="seeds"))
    assert res.error is None
    assert len(ds.exists("sepl_miou")) == len(ds) and ds.has_field("sepl_delta")
    res = _run(ds, "show_worst_samples", dict(eval_key="sepl", by="delta", limit=3))
    assert res.error is None
    expected = sorted(zip(ds.values("sepl_delta"), [Path(p).stem for p in ds.values("filepath")]))[:3]
    assert res.result["ids"] == [sid for _, sid in expected]
    assert set(res.result["class_iou"]) == set(SYNTH_CLASSES)


def test_refine_and_evaluate_delegated(plugin, ds):
    from fiftyone.operators.executor import ExecutionRunState

    res = _run(ds, "refine_with_sepl", dict(seed_field="seeds", masks_field="sam", out_field="sepl",
                                            delegate=True), delegate=True)
    assert res.error is None and res.delegated
    assert not ds.has_field("sepl") or len(ds.exists("sepl")) == 0  # queued, not run yet
    svc, ops = _run_queued(ds)
    assert [o.run_state for o in ops] == [ExecutionRunState.COMPLETED], [o.run_state for o in ops]
    ds.reload()
    assert len(ds.exists("sepl")) == len(ds)
    assert ops[0].status is not None and ops[0].status.progress == pytest.approx(1.0)

    res = _run(ds, "evaluate_segmentation", dict(gt_field="ground_truth", pred_field="sepl", delegate=True),
               delegate=True)
    assert res.delegated
    svc.execute_queued_operations(dataset_name=ds.name)
    ds.reload()
    assert ds.has_evaluation("sepl") and len(ds.exists("sepl_miou")) == len(ds)
    for op in svc.list_operations(dataset_name=ds.name):
        svc.delete_operation(op.id)


def test_refine_operator_reports_bad_samples(plugin, ds):
    first = ds.first()
    first.seeds = None
    first.save()
    with pytest.raises(ExecutionError, match=first.id):
        _run(ds, "refine_with_sepl", dict(seed_field="seeds", masks_field="sam", out_field="sepl"))
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
