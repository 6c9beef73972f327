"""SAM 2 / SAM-HQ automatic masks as mask sources on FiftyOne samples (tiny random models):
stored like the other sources, resume, a broken image, SEPL refine on them, the CLI."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("torch")
pytest.importorskip("transformers")

import fiftyone as fo  # noqa: E402

from sepl.errors import SeplError  # noqa: E402
from sepl.fo import masks as fomasks  # noqa: E402
from sepl.fo.convert import load_masks  # noqa: E402

AUTO = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


@pytest.mark.parametrize("source", ["sam2_auto", "samhq_auto"])
def test_hf_sources_on_samples_resume_and_bad_image(synth_dataset, tmp_path, source):
    from sepl.labelio import read_image
    from sepl.masks.sam2_auto import build_auto_masks

    ds = synth_dataset.limit(3).clone()
    first = ds.first()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    ds.add_sample(fo.Sample(filepath=str(broken)))
    params = dict(AUTO, random_weights=True)
    s = fomasks.generate_masks(ds, "m", source=source, params=params, batch_size=2, device="cpu")
    assert s["processed"] == 3 and len(s["failed"]) == 1 and "broken.jpg" in s["failed"][0]
    assert s["source"] == f"{source}/{source[:-5]}-tiny-random"
    direct = build_auto_masks(source[:-5], random_weights=True, device="cpu", **AUTO).generate(
        read_image(first.filepath))
    first.reload()
    stored = load_masks(first, "m")
    assert len(stored) == len(direct) == 48
    assert (stored == direct.masks).mean() > 0.999  # batched vs one image: last-bit float differences at most
    det = first.m.detections[0]
    assert det.source == s["source"] and det.predicted_iou is not None and det.stability_score is not None
    # the run records the parameters, random weights included; a rerun resumes
    info = ds.get_run_info("sepl_m").config.serialize()
    assert info["source"] == source and info["random_weights"] is True
    again = fomasks.generate_masks(ds, "m", source=source, params=params, batch_size=2, device="cpu")
    assert again["processed"] == 0 and again["skipped"] == 3 and len(again["failed"]) == 1
    with pytest.raises(SeplError, match="already exists"):
        fomasks.generate_masks(ds, "m", source=source, params=dict(params, points_per_side=3), device="cpu")
    # without weights and without random weights: an error naming the models to download
    with pytest.raises(SeplError, match="model given"):
        fomasks.generate_masks(ds, "m2", source=source, params=AUTO, device="cpu")
    fo.delete_dataset(ds.name)


def test_sepl_refine_takes_sam2_masks(synth_dataset):
    from sepl.fo import refine
    from sepl.fo.convert import load_label_map
    from sepl.merge import merge
    from sepl.synth import SYNTH_CLASSES

    ds = synth_dataset.limit(2).clone()
    fomasks.generate_masks(ds, "sam2_masks", source="sam2_auto", params=dict(AUTO, random_weights=True),
                           device="cpu")
    assert refine(ds, "ground_truth", "sam2_masks", out_field="sepl2") == 2
    s = ds.first()
    want = merge(load_label_map(s, "ground_truth"), load_masks(s, "sam2_masks"), mode="paper",
                 num_classes=len(SYNTH_CLASSES)).labels
    assert np.array_equal(load_label_map(s, "sepl2"), want)
    fo.delete_dataset(ds.name)


def test_cli_with_a_saved_folder(synth_dataset, tmp_path):
    from sepl.cli import main
    from sepl.masks import hf_models

    folder = hf_models.write_tiny("sam2", tmp_path / "sam2-tiny")
    ds = synth_dataset.limit(2).clone()
    ds.persistent = True
    try:
        args = ["masks", "--dataset", ds.name, "--source", "sam2_auto", "--checkpoint", str(folder),
                "--device", "cpu", "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
                "--out-field", "cli_masks"]
        assert main(args) == 0
        ds.reload()
        assert ds.count("cli_masks") == 2
        assert ds.first().cli_masks.detections[0].source == "sam2_auto/sam2-tiny"
        assert main(args[:5] + ["--checkpoint", str(tmp_path / "nowhere"), "--out-field", "x"]) == 1
    finally:
        fo.delete_dataset(ds.name)


def test_generate_masks_operator_offers_sam2(synth_dataset, monkeypatch, tmp_path):
    from pathlib import Path

    import fiftyone.operators as foo

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "sepl").symlink_to(repo, target_is_directory=True)
    monkeypatch.setenv("FIFTYONE_PLUGINS_DIR", str(tmp_path))
    monkeypatch.setattr(fo.config, "plugins_dir", str(tmp_path))
    ds = synth_dataset.limit(2).clone()
    try:
        params = dict(source="sam2_auto", random_weights=True, out_field="op_masks", delegate=False, device="cpu",
                      target="DATASET", **AUTO)
        res = foo.execute_operator("@sepl/sepl/generate_masks", ctx=dict(dataset=ds, params=params))
        res.raise_exceptions()
        assert res.result["processed"] == 2 and res.result["source"].startswith("sam2_auto/")
        assert ds.get_run_info("sepl_op_masks").config.serialize()["random_weights"] is True
    finally:
        fo.delete_dataset(ds.name)
