"""Masks on FiftyOne samples: SAM (tiny, random weights) and superpixels, resume, failures,
the operator, apply_model, the CLI, and the classical source on real photographs."""

import logging
import os

import numpy as np
import pytest

import fiftyone as fo

from sepl.errors import SeplError
from sepl.fo import masks as fomasks
from sepl.fo.convert import load_masks

AUTO = dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


def test_sam_auto_on_samples_resume_and_bad_image(synth_dataset, tmp_path):
    pytest.importorskip("segment_anything")
    from sepl.masks.build import build_sam
    from sepl.masks.sam_auto import SamAutoMasks

    ds = synth_dataset
    first = ds.first()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    ds.add_sample(fo.Sample(filepath=str(broken)))
    s = fomasks.generate_masks(ds, "sam_masks", source="sam_auto", model_type="tiny", random_weights=True, params=AUTO, batch_size=3)
    assert s["processed"] == len(ds) - 1 and len(s["failed"]) == 1 and "broken.jpg" in s["failed"][0]
    assert ds.count("sam_masks") == len(ds) - 1
    # what is stored equals the source's own output, with its per-mask attributes; computed
    # as the run computed it (the first batch of 3 images encoded together, on the same
    # device): batched encoding rounds differently from one image alone
    from sepl.labelio import read_image

    firsts = [read_image(s.filepath) for s in ds.limit(3)]
    direct = SamAutoMasks(build_sam("tiny", device="auto", random_weights=True), **AUTO, model_type="tiny",
                          image_batch=3).generate_batch(firsts)[0]
    first.reload()
    stored = load_masks(first, "sam_masks")
    assert np.array_equal(stored, direct.masks)
    det = first.sam_masks.detections[0]
    assert det.area == int(direct.area[0]) and det.source == "sam_auto/tiny"
    assert det.confidence == pytest.approx(float(direct.predicted_iou[0]), abs=1e-6)
    assert det.stability_score == pytest.approx(float(direct.stability_score[0]), abs=1e-6)
    # rerun resumes: only the failed sample is retried (and fails again, nothing else touched)
    s2 = fomasks.generate_masks(ds, "sam_masks", source="sam_auto", model_type="tiny", random_weights=True, params=AUTO, batch_size=3)
    assert s2["processed"] == 0 and s2["skipped"] == len(ds) - 1 and len(s2["failed"]) == 1
    # other parameters do not silently mix into the same field
    with pytest.raises(SeplError, match="already exists"):
        fomasks.generate_masks(ds, "sam_masks", source="sam_auto", model_type="tiny", random_weights=True,
                               params=dict(AUTO, points_per_side=4))


def test_sam_box_on_samples(synth_dataset):
    pytest.importorskip("segment_anything")
    from sepl.masks.build import build_sam
    from sepl.masks.sam_box import BoxPromptedSAM
    from sepl.labelio import read_image

    ds = synth_dataset
    for k, s in enumerate(ds):
        dets = [fo.Detection(label="disc", bounding_box=[0.1, 0.1, 0.4, 0.5]),
                fo.Detection(label="star", bounding_box=[0.5, 0.2, 0.3, 0.3])][: k % 3]
        s["boxes"] = fo.Detections(detections=dets)
        s.save()
    summ = fomasks.generate_masks(ds, "box_masks", source="sam_box", model_type="tiny", random_weights=True, prompt_field="boxes")
    assert summ["processed"] == len(ds) and not summ["failed"]
    s = ds.skip(1).first()
    h, w = s.metadata.height, s.metadata.width
    assert [d.label for d in s.box_masks.detections] == ["disc"]
    expected, scores = BoxPromptedSAM(build_sam("tiny", random_weights=True)).predict(read_image(s.filepath),
                                                                 np.array([[20, 16, 100, 96]], np.float32))
    assert h == 160 and w == 200
    assert np.array_equal(load_masks(s, "box_masks"), expected)
    assert len(ds.first().box_masks.detections) == 0
    with pytest.raises(SeplError, match="prompt field"):
        fomasks.generate_masks(ds, "x", source="sam_box", model_type="tiny", random_weights=True)


def test_superpixels_on_samples_say_not_sam(synth_dataset, caplog):
    ds = synth_dataset
    with caplog.at_level(logging.WARNING):
        s = fomasks.generate_masks(ds, "sp", source="superpixels")
    assert s["processed"] == len(ds) and "NOT SAM" in s["source"]
    assert "not SAM" in caplog.text
    det = ds.first().sp.detections[0]
    assert "NOT SAM" in det.source and det.confidence is None and det.predicted_iou is None
    info = ds.get_run_info("sepl_sp").config.serialize()
    assert info["not_sam"] is True and info["source"] == "superpixels"
    m = load_masks(ds.first(), "sp")
    assert (m.sum(0) == 1).all()  # a partition: every pixel in exactly one region


def test_operator_immediate_and_apply_model(synth_dataset, monkeypatch, tmp_path):
    pytest.importorskip("segment_anything")
    import fiftyone.operators as foo

    from sepl.masks.build import build_sam
    from sepl.masks.sam_auto import SamAutoMasks

    (tmp_path / "sepl").symlink_to(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                   target_is_directory=True)
    monkeypatch.setattr(fo.config, "plugins_dir", str(tmp_path))
    ds = synth_dataset
    view = ds.limit(3)
    res = foo.execute_operator("@sepl/sepl/generate_masks", ctx=dict(
        dataset=ds, view=view, params=dict(source="sam_auto", model_type="tiny", random_weights=True, out_field="op_masks",
                                           delegate=False, target="CURRENT_VIEW", **AUTO)))
    res.raise_exceptions()
    assert res.result["processed"] == 3 and ds.count("op_masks") == 3
    model = fomasks.MaskSourceModel(SamAutoMasks(build_sam("tiny", random_weights=True), model_type="tiny", **AUTO))
    view.apply_model(model, "model_masks", batch_size=2)
    from sepl.masks.base import matched_fraction

    for s in view:  # encoder batches differ (2 vs 3 images): same masks up to float noise
        a, b = load_masks(s, "model_masks"), load_masks(s, "op_masks")
        assert len(a) == len(b) and matched_fraction(a, b, 0.99) >= 0.99


def test_cli_dataset_and_folder(synth_dataset, synth_voc, tmp_path, capsys):
    pytest.importorskip("segment_anything")
    from sepl.cli import main

    ds = synth_dataset
    ds.persistent = False
    code = main(["masks", "--dataset", ds.name, "--source", "superpixels", "--out-field", "cli_sp", "--shard", "0/2"])
    assert code == 0 and ds.count("cli_sp") == len(ds) // 2
    code = main(["masks", "--dataset", ds.name, "--source", "superpixels", "--out-field", "cli_sp", "--shard", "1/2"])
    assert code == 0 and ds.count("cli_sp") == len(ds)
    amgio = pytest.importorskip("sepl.amgio")
    out = tmp_path / "amg"
    args = ["masks", "--images", str(synth_voc / "JPEGImages"), "--out-dir", str(out), "--model-type", "tiny", "--random-weights",
            "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
    assert main(args) == 0
    folders = sorted(p for p in out.iterdir())
    assert len(folders) == 8 and all((f / "metadata.csv").is_file() for f in folders)
    masks, meta = amgio.read_amg_folder(folders[0])
    assert masks.ndim == 3 and len(meta) == len(masks)
    assert main(args) == 0 and "0 images written" in capsys.readouterr().out  # resume


def test_superpixels_on_real_photographs(voc_train, caplog):
    from sepl.labelio import read_image, read_label
    from sepl.masks.superpixels import HierarchicalSuperpixels

    ids = sorted(p.stem for p in (voc_train / "images").glob("*.jpg"))
    assert len(ids) == 5
    src = HierarchicalSuperpixels()
    hier = HierarchicalSuperpixels(mode="hierarchy", scales=(100,), max_area_frac=0.6, min_area_frac=0.002)
    for i in ids:
        im = read_image(voc_train / "images" / f"{i}.jpg")
        gt = read_label(voc_train / "gt" / f"{i}.png")
        ms = src.generate(im)
        assert ms.masks.shape[1:] == im.shape[:2] and (ms.masks.sum(0) == 1).all()
        assert 30 < len(ms) < 1000 and not src.is_sam and "NOT SAM" in ms.source
        # regions follow object boundaries: most of each region has one GT class
        lab = np.where(gt == 255, 0, gt).astype(np.int64)
        counts = ms.masks.reshape(len(ms), -1).astype(np.float32) @ np.eye(21, dtype=np.float32)[lab.ravel()]
        purity = counts.max(1).sum() / counts.sum()
        assert purity > 0.9, (i, purity)
        h = hier.generate(im)
        assert len(h) > 0 and h["level"].min() >= 1 and (h.area <= 0.6 * gt.size + 1).all()
    assert "NOT SAM" in caplog.text
