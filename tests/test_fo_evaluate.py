"""sepl's segmentation evaluation as a first-class FiftyOne evaluation: ``method="sepl"``,
metrics and per-label ids as the Model Evaluation panel reads them, the mIoU custom metric on
native evaluations, and class names (mask targets) checked or matched by name."""

from pathlib import Path

import numpy as np
import pytest

from sepl.errors import SeplError

REPO = Path(__file__).resolve().parent.parent
CLASSES = ["background", "cat", "dog", "car"]


@pytest.fixture
def seg_ds(dataset, tmp_path, rng):
    """6 samples, 40x50 GT (4 classes, a few 255 pixels in the GT only) and a noisy prediction."""
    import fiftyone as fo

    from sepl.fo.convert import set_mask_targets
    from PIL import Image

    samples = []
    for k in range(6):
        gt = np.zeros((40, 50), np.uint8)
        gt[5:25, 5:25] = 1 + k % 3
        gt[20:35, 30:45] = 1 + (k + 1) % 3
        gt[0, :] = 255
        pred = np.where(gt == 255, 0, gt)
        pred = np.roll(pred, k + 1, axis=1)
        noise = rng.random(gt.shape) < 0.05
        pred[noise] = rng.integers(0, 4, noise.sum())
        path = tmp_path / f"im{k}.png"
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(path)
        samples.append(fo.Sample(filepath=str(path), ground_truth=fo.Segmentation(mask=gt),
                                 pred=fo.Segmentation(mask=pred.astype(np.uint8))))
    dataset.add_samples(samples)
    set_mask_targets(dataset, "ground_truth", dict(enumerate(CLASSES)))
    return dataset


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


def _reference_miou(ds, field="pred"):
    from sepl.metrics import ConfusionMatrix

    cm = ConfusionMatrix(num_classes=len(CLASSES), ignore_index=255)
    for gt, pred in zip(ds.values("ground_truth.mask"), ds.values(f"{field}.mask")):
        cm.update(pred, gt)
    return cm.miou()


def test_method_sepl_through_fiftyone(seg_ds):
    import fiftyone as fo

    import sepl.fo  # noqa: F401  (registers the method)

    res = fo.evaluate_segmentations(seg_ds, "pred", gt_field="ground_truth", eval_key="viafo", method="sepl")
    assert seg_ds.get_evaluation_info("viafo").config.method == "sepl"
    assert res.miou() == pytest.approx(_reference_miou(seg_ds))
    assert len(seg_ds.exists("viafo_miou")) == len(seg_ds)
    # the collection method resolves it the same way
    res2 = seg_ds.evaluate_segmentations("pred", gt_field="ground_truth", eval_key="viads", method="sepl")
    assert np.array_equal(res2.pixel_confusion_matrix, res.pixel_confusion_matrix)
    loaded = seg_ds.load_evaluation_results("viafo")
    assert loaded.miou() == pytest.approx(res.miou())
    # FiftyOne's mask_targets argument names the classes of a GT field that has none
    seg_ds.mask_targets = {}
    seg_ds.save()
    res3 = fo.evaluate_segmentations(seg_ds, "pred", gt_field="ground_truth", eval_key="viatargets", method="sepl",
                                     mask_targets=dict(enumerate(CLASSES)))
    assert list(res3.classes) == CLASSES and res3.miou() == pytest.approx(res.miou())


def test_results_match_native_conventions_and_ids(seg_ds):
    import fiftyone as fo

    from sepl.fo import evaluate

    (res,) = evaluate(seg_ds, "pred", "ground_truth", eval_keys=["sepl_eval"])
    # the native evaluation, told the same classes; its 255 pixels are a class of their own
    # there, so compare on a copy of the GT without them
    for s in seg_ds.iter_samples(autosave=True):
        m = s.ground_truth.mask.copy()
        m[m == 255] = 0
        s["gt0"] = fo.Segmentation(mask=m)
    from sepl.fo.convert import set_mask_targets

    set_mask_targets(seg_ds, "gt0", dict(enumerate(CLASSES)))
    (res0,) = evaluate(seg_ds, "pred", "gt0", eval_keys=["sepl0"])
    native = fo.evaluate_segmentations(seg_ds, "pred", gt_field="gt0", eval_key="native",
                                       mask_targets=dict(enumerate(CLASSES)))
    assert native.missing == "background" and res0.missing == "background"
    sepl_m, native_m = res0.metrics(), native.metrics()
    for k in ("accuracy", "precision", "recall", "fscore", "support"):
        assert sepl_m[k] == pytest.approx(native_m[k]), k
    for c in CLASSES[1:]:
        assert res0.report()[c]["recall"] == pytest.approx(native.report()[c]["recall"])
    assert "background" not in res0.report()
    # mIoU is among the metrics, also after loading, and as a custom metric the panel lists
    loaded = seg_ds.load_evaluation_results("sepl_eval")
    assert loaded.metrics()["mIoU"] == pytest.approx(res.miou()) == pytest.approx(_reference_miou(seg_ds))
    cm = loaded.custom_metrics["@sepl/sepl/miou"]
    assert cm["value"] == pytest.approx(res.miou()) and cm["lower_is_better"] is False
    # per-label ids: every match names the real GT and prediction labels of its sample
    gt_ids = set(seg_ds.values("ground_truth.id"))
    pred_ids = set(seg_ds.values("pred.id"))
    assert set(loaded.ytrue_ids) == gt_ids and set(loaded.ypred_ids) == pred_ids
    assert sum(loaded.weights) == res.pixel_confusion_matrix.sum()


def test_model_evaluation_panel_opens_the_samples(seg_ds):
    """What the App's Model Evaluation panel does on a click: class -> samples, cell -> samples."""
    pytest.importorskip("plugins.panels.model_evaluation")
    from fiftyone import ViewField as F
    from plugins.panels.model_evaluation import (
        _get_segmentation_class_ids,
        _get_segmentation_conf_mat_ids,
        _init_segmentation_results,
    )

    from sepl.fo import evaluate

    evaluate(seg_ds, "pred", "ground_truth", eval_keys=["ev"])
    res = seg_ds.load_evaluation_results("ev")
    _init_segmentation_results(seg_ds, res, "ground_truth")
    for c in CLASSES[1:]:
        gt_ids, pred_ids = _get_segmentation_class_ids(res, c)
        view = seg_ds.match(F("ground_truth._id").is_in(gt_ids) | F("pred._id").is_in(pred_ids))
        expect = [s.id for s in seg_ds if (s.ground_truth.mask == CLASSES.index(c)).any()
                  or (s.pred.mask == CLASSES.index(c)).any()]
        assert sorted(view.values("id")) == sorted(expect) and expect
    gt_ids, pred_ids = _get_segmentation_conf_mat_ids(res, "cat", "dog")
    view = seg_ds.match(F("ground_truth._id").is_in(gt_ids) & F("pred._id").is_in(pred_ids))
    expect = [s.id for s in seg_ds if ((s.ground_truth.mask == 2) & (s.pred.mask == 1)).any()]
    assert sorted(view.values("id")) == sorted(expect) and expect


def test_miou_custom_metric_on_native_evaluation(seg_ds, plugin):
    import fiftyone as fo

    native = fo.evaluate_segmentations(seg_ds, "pred", gt_field="ground_truth", eval_key="nat",
                                       custom_metrics=["@sepl/sepl/miou"])
    # native classes are the observed values ("0".."3" and the GT's "255"): 255 is left out
    assert "255" in list(native.classes)
    assert native.metrics()["mIoU"] == pytest.approx(_reference_miou(seg_ds))
    assert seg_ds.load_evaluation_results("nat").custom_metrics["@sepl/sepl/miou"]["lower_is_better"] is False


def _reverse_targets(ds, field, remap_pixels):
    import fiftyone as fo

    from sepl.fo.convert import set_mask_targets

    n = len(CLASSES)
    for s in ds.iter_samples(autosave=True):
        m = s.ground_truth.mask
        if remap_pixels:
            m = np.where(m == 255, 255, n - 1 - m.astype(np.int64)).astype(np.uint8)
        s[field] = fo.Segmentation(mask=m.copy())
    set_mask_targets(ds, field, {n - 1 - k: c for k, c in enumerate(CLASSES)})


def test_reversed_mask_targets_are_refused(seg_ds):
    """A copy of the GT whose mask targets are in reverse order does not score 1.0."""
    from sepl.fo import evaluate

    _reverse_targets(seg_ds, "rev", remap_pixels=False)
    with pytest.raises(SeplError) as e:
        evaluate(seg_ds, "rev", "ground_truth")
    msg = str(e.value)
    assert "'rev'" in msg and "'ground_truth'" in msg and "match_by='name'" in msg
    # refused before anything was stored
    assert not seg_ds.has_evaluation("rev") and not seg_ds.has_field("rev_miou")
    # by name: value k of 'rev' is the class CLASSES[n-1-k], which the pixels are not
    (res,) = evaluate(seg_ds, "rev", "ground_truth", match_by="name")
    assert res.miou() < 0.5
    assert seg_ds.get_evaluation_info("rev").config.match_by == "name"


def test_match_by_name_maps_a_reordered_field(seg_ds):
    from sepl.fo import evaluate

    _reverse_targets(seg_ds, "rev", remap_pixels=True)  # the GT, encoded with reversed targets
    (res,) = evaluate(seg_ds, "rev", "ground_truth", match_by="name")
    assert res.miou() == pytest.approx(1.0)
    assert list(res.classes) == CLASSES
    # a prediction class the GT does not have is named
    from sepl.fo.convert import set_mask_targets

    set_mask_targets(seg_ds, "rev", {0: "car", 1: "dog", 2: "cat", 3: "zebra"})
    with pytest.raises(SeplError, match=r"\['zebra'\]"):
        evaluate(seg_ds, "rev", "ground_truth", match_by="name", overwrite=True)


def test_cli_match_by_name(seg_ds, capsys):
    from sepl.cli import main

    seg_ds.persistent = True
    _reverse_targets(seg_ds, "rev", remap_pixels=True)
    assert main(["evaluate", "--dataset", seg_ds.name, "--pred", "rev"]) == 1
    assert "--match-by name" in capsys.readouterr().err
    assert main(["evaluate", "--dataset", seg_ds.name, "--pred", "rev", "--match-by", "name"]) == 0
    assert "rev: mIoU 100.00" in capsys.readouterr().out


def test_operator_match_by_name(seg_ds, plugin):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    _reverse_targets(seg_ds, "rev", remap_pixels=True)
    ctx = dict(dataset=seg_ds, view=seg_ds.view(), params=dict(gt_field="ground_truth", pred_field="rev"))
    with pytest.raises(ExecutionError, match="match_by='name'"):
        foo.execute_operator("@sepl/sepl/evaluate_segmentation", ctx=ctx)
    ctx["params"]["match_by"] = "name"
    foo.execute_operator("@sepl/sepl/evaluate_segmentation", ctx=ctx)
    assert seg_ds.load_evaluation_results("rev").miou() == pytest.approx(1.0)
