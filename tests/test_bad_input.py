"""The bad-input matrix of issue 15: one test per case, each asserting the clear error and
that everything stored before is unchanged.

Cases 1-4 and 11-12 are tested elsewhere (run records, class names, SAM/Grounding DINO
exactness); the numbers here are the issue's.
"""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sepl.classes import voc_palette
from sepl.errors import SeplError
from sepl.labelio import read_label, write_label

REPO = Path(__file__).resolve().parent.parent


def _snapshot(ds):
    """Everything a command could damage: every sample's fields, the runs, the schema."""
    ds.reload()
    return ({s.id: s.to_dict() for s in ds}, sorted(ds.list_runs()), sorted(ds.get_field_schema()),
            dict(ds.mask_targets), dict(ds.default_mask_targets))


def _without(samples, *fields):
    """The sample dicts of a snapshot without ``fields`` (what the command under test writes)
    and FiftyOne's own ``last_modified_at`` stamp."""
    fields = set(fields) | {"last_modified_at"}
    return {k: {f: v for f, v in d.items() if f not in fields} for k, d in samples.items()}


def _gt_labels(ds):
    from sepl.fo.convert import load_label_map

    return {Path(s.filepath).stem: load_label_map(s, "ground_truth") for s in ds}


def _cli(capsys, *argv):
    from sepl.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- 5: RGB label PNGs ------------------------------------------------------------------------


def test_case05_rgb_seed_png_with_indices_in_rgb_is_an_error_not_voc_colours(synth_dataset, tmp_path):
    from sepl.fo.importers import import_seeds

    ds = synth_dataset
    gts = _gt_labels(ds)
    grey, colour = tmp_path / "grey", tmp_path / "colour"
    for stem, gt in gts.items():
        grey.mkdir(exist_ok=True)
        colour.mkdir(exist_ok=True)
        Image.fromarray(np.stack([gt] * 3, -1)).save(grey / f"{stem}.png")        # index in R, G and B
        Image.fromarray(voc_palette(256)[gt]).save(colour / f"{stem}.png")       # true VOC colours
    before = _snapshot(ds)
    with pytest.raises(SeplError, match="not in the class palette") as e:
        import_seeds(ds, str(grey), field="seeds")
    assert "palette or greyscale PNG" in str(e.value) and "0 written" in str(e.value)
    assert not ds.has_field("seeds") or ds.count("seeds") == 0
    assert _without(_snapshot(ds)[0], "seeds") == _without(before[0], "seeds")
    # decided from the file: a palette PNG by index, an RGB PNG in the palette's colours decoded
    assert np.array_equal(read_label(colour / f"{next(iter(gts))}.png"), next(iter(gts.values())))
    import_seeds(ds, str(colour), field="seeds_rgb")
    from sepl.fo.convert import load_label_map

    for s in ds:
        assert np.array_equal(load_label_map(s, "seeds_rgb"), gts[Path(s.filepath).stem])


# -- 6: 16-bit label PNGs ---------------------------------------------------------------------


def test_case06_16bit_label_values_above_255_are_an_error_in_eval_merge_and_importers(
        synth_dataset, tmp_path, capsys):
    from sepl.fo.importers import import_seeds

    ds = synth_dataset
    gts = _gt_labels(ds)
    stem = sorted(gts)[0]
    seeds, gt_dir, masks = tmp_path / "seeds", tmp_path / "gt", tmp_path / "masks"
    for d in (seeds, gt_dir, masks):
        d.mkdir()
    for sid, gt in gts.items():
        write_label(gt_dir / f"{sid}.png", gt)
        wide = gt.astype(np.uint16)
        if sid == stem:
            wide[0, 0] = 259  # read as class 3 if wrapped
        Image.fromarray(wide).save(seeds / f"{sid}.png")
        (masks / f"{sid}.json").write_text("[]")
    assert Image.open(seeds / f"{stem}.png").mode.startswith("I")
    with pytest.raises(SeplError, match="do not fit in 0..255"):
        read_label(seeds / f"{stem}.png")
    # sepl eval: the image is named as not scored, the others are
    code, out, err = _cli(capsys, "eval", "--pred", seeds, "--gt", gt_dir, "--num-classes", 6, "--no-progress")
    assert code == 1 and stem in err and "do not fit" in err and f"{len(gts) - 1} images" in out
    # sepl merge: not written, the others are
    code, out, err = _cli(capsys, "merge", "--seeds", seeds, "--masks", masks, "--out", tmp_path / "merged",
                          "--num-classes", 6, "--allow-empty", "--no-progress")
    assert code == 1 and stem in err and "do not fit" in err
    assert not (tmp_path / "merged" / f"{stem}.png").exists()
    # the importers: that sample is not written, what was stored is unchanged
    before = _snapshot(ds)
    with pytest.raises(SeplError, match="do not fit") as e:
        import_seeds(ds, str(seeds), field="seeds")
    assert f"{len(gts) - 1} written" in str(e.value)
    assert ds.count("seeds") == len(gts) - 1
    assert ds.match({"filepath": {"$regex": f"{stem}\\.jpg$"}}).first()["seeds"] is None
    assert _without(_snapshot(ds)[0], "seeds") == _without(before[0], "seeds")


# -- 7: SAM without a checkpoint ---------------------------------------------------------------


def test_case07_sam_without_checkpoint_needs_random_weights_flag_and_records_it(synth_dataset, capsys):
    ds = synth_dataset
    ds.persistent = True  # the CLI loads it by name
    try:
        before = _snapshot(ds)
        code, out, err = _cli(capsys, "masks", "--dataset", ds.name, "--model-type", "tiny", "--out-field", "m")
        assert code == 1 and "random weights" in err and "--source superpixels" in err and "--random-weights" in err
        assert _snapshot(ds) == before  # no field, no run record
        from sepl.masks.build import build_sam

        with pytest.raises(SeplError, match="--source superpixels"):
            build_sam("tiny")
        code, out, err = _cli(capsys, "masks", "--dataset", ds.name, "--model-type", "tiny", "--out-field", "m",
                              "--random-weights", "--points-per-side", 2, "--pred-iou-thresh", 0,
                              "--stability-score-thresh", 0, "--batch-size", 4)
        assert code == 0, err
        assert ds.get_run_info("sepl_m").config.serialize()["random_weights"] is True
    finally:
        ds.persistent = False


# -- 8: malformed RLE, empty mask sets --------------------------------------------------------


def test_case08_malformed_rle_is_an_error_not_a_whole_image_mask(synth_dataset, tmp_path):
    from sepl.amgio import encode_rle, read_rle_json
    from sepl.fo.importers import import_masks

    ds = synth_dataset
    folder = tmp_path / "rle"
    folder.mkdir()
    stems = sorted(Path(s.filepath).stem for s in ds)
    h, w = ds.first().metadata.height, ds.first().metadata.width
    good = np.zeros((h, w), bool)
    good[10:20, 30:50] = True
    for sid in stems:
        (folder / f"{sid}.json").write_text(json.dumps([{"segmentation": encode_rle(good), "predicted_iou": 0.9}]))
    # counts summing to 35 for the whole image: a truncated file
    bad = {"size": [h, w], "counts": encode_rle(good[:5, :7])["counts"]}
    (folder / f"{stems[0]}.json").write_text(json.dumps([{"segmentation": bad}]))
    with pytest.raises(SeplError, match=f"sum to 35, not {h}x{w}"):
        read_rle_json(folder / f"{stems[0]}.json")
    before = _snapshot(ds)
    with pytest.raises(SeplError, match="malformed RLE") as e:
        import_masks(ds, str(folder), field="masks")
    assert stems[0] in str(e.value) and f"{len(stems) - 1} written" in str(e.value)
    first = ds.match({"filepath": {"$regex": f"{stems[0]}\\.jpg$"}}).first()
    assert first["masks"] is None
    assert _without(_snapshot(ds)[0], "masks") == _without(before[0], "masks")


def test_case08_empty_mask_set_imports_as_empty_detections_and_refine_allow_empty(synth_dataset, tmp_path,
                                                                                  capsys, caplog):
    from sepl.fo.importers import import_masks, import_seeds

    ds = synth_dataset
    ds.persistent = True
    try:
        stems = sorted(Path(s.filepath).stem for s in ds)
        folder, seeds = tmp_path / "masks", tmp_path / "seeds"
        folder.mkdir()
        seeds.mkdir()
        for k, (sid, gt) in enumerate(sorted(_gt_labels(ds).items())):
            write_label(seeds / f"{sid}.png", gt)
            if k % 2:
                (folder / sid).mkdir()          # amg.py folder of an image where SAM found nothing
            else:
                (folder / f"{sid}.json").write_text("[]")
        import_seeds(ds, str(seeds), field="seeds")
        with caplog.at_level("WARNING"):
            assert import_masks(ds, str(folder), field="masks") == len(stems)
        assert "empty mask set" in caplog.text and "--allow-empty" in caplog.text
        assert all(len(s["masks"].detections) == 0 for s in ds)
        before = _snapshot(ds)
        code, out, err = _cli(capsys, "refine", "--dataset", ds.name, "--seeds", "seeds", "--masks", "masks",
                              "--out", "sepl")
        assert code == 1 and "allow_empty" in err.replace("--allow-empty", "allow_empty")
        code, out, err = _cli(capsys, "refine", "--dataset", ds.name, "--seeds", "seeds", "--masks", "masks",
                              "--out", "sepl2", "--allow-empty")
        assert code == 0, err
        from sepl.fo.convert import load_label_map

        for s in ds:  # no masks: each sample keeps its seed (its ignore pixels filled by the fallback)
            seed = load_label_map(s, "seeds")
            assert np.array_equal(load_label_map(s, "sepl2")[seed != 255], seed[seed != 255])
        after = _snapshot(ds)
        keep = ("seeds", "masks", "ground_truth", "image_labels")
        assert {k: {f: d.get(f) for f in keep} for k, d in after[0].items()} == \
            {k: {f: d.get(f) for f in keep} for k, d in before[0].items()}
    finally:
        ds.persistent = False


# -- 9: evaluate plots, output paths, batch sizes ---------------------------------------------


def test_case09_plot_miou_matches_the_table_and_outputs_are_checked_first(tmp_path, capsys):
    from sepl.metrics import ConfusionMatrix
    from sepl.plots import plot_class_iou

    # a subset missing class 2: the table skips it (nanmean), so must the figure
    gt = np.array([[0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1]], np.uint8)
    cm = ConfusionMatrix(3, 255).update(pred, gt)
    iou = cm.iou()
    assert np.isnan(iou[2])
    fig = plot_class_iou(iou, ["background", "a", "b"])
    assert fig.axes[0].get_title() == f"mIoU {100 * cm.miou():.2f}"
    fig = plot_class_iou(iou, ["background", "a", "b"], baseline=iou)
    assert all(f"mIoU {100 * cm.miou():.1f}" in t.get_text() for t in fig.axes[0].get_legend().get_texts())

    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    for d in (pred_dir, gt_dir):
        d.mkdir()
    write_label(pred_dir / "a.png", pred)
    write_label(gt_dir / "a.png", gt)
    # --json / --per-sample into a missing folder: created, as --plots does
    code, out, err = _cli(capsys, "eval", "--pred", pred_dir, "--gt", gt_dir, "--num-classes", 3, "--no-progress",
                          "--json", tmp_path / "new" / "s.json", "--per-sample", tmp_path / "new2" / "p.csv")
    assert code == 0, err
    assert json.loads((tmp_path / "new" / "s.json").read_text())["images"] == 1
    assert (tmp_path / "new2" / "p.csv").read_text().startswith("id,")
    # an unwritable export: a sepl error before anything is printed or scored
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = _cli(capsys, "eval", "--pred", pred_dir, "--gt", gt_dir, "--num-classes", 3, "--no-progress",
                          "--json", blocker / "s.json")
    assert code == 1 and err.startswith("sepl: error: --json") and "Traceback" not in err and "mIoU" not in out
    code, out, err = _cli(capsys, "export", "--dataset", "no-such-dataset-x", "--field", "f", "--out", blocker / "o")
    assert code == 1 and "--out" in err and "is a file" in err
    # --batch-size 0: refused by the parser, before any work
    with pytest.raises(SystemExit) as e:
        _cli(capsys, "masks", "--dataset", "x", "--source", "superpixels", "--batch-size", "0")
    assert e.value.code == 2 and "must be at least 1" in capsys.readouterr().err


# -- 10: code execution from data files --------------------------------------------------------


class _Payload:
    """Unpickling this creates the marker file: what an evil checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _evil_torch(path: Path, marker: Path, wrap=lambda p: {"model": {"w": p}}) -> Path:
    import torch

    torch.save(wrap(_Payload(marker)), path)
    return path


def test_case10_sam_checkpoint_payload_is_refused_without_running(tmp_path):
    from sepl.masks.build import build_sam

    marker = tmp_path / "ran"
    evil = _evil_torch(tmp_path / "evil.pth", marker)
    with pytest.raises(SeplError, match="refused without running"):
        build_sam("tiny", checkpoint=str(evil))
    assert not marker.exists()


def test_case10_cam_infer_checkpoint_payload_is_refused_without_running(tmp_path, synth_voc, capsys):
    marker = tmp_path / "ran"
    evil = _evil_torch(tmp_path / "evil.pth", marker)
    code, out, err = _cli(capsys, "cam", "infer", "--images", synth_voc / "JPEGImages", "--label-maps",
                          synth_voc / "SegmentationClass", "--checkpoint", evil, "--out", tmp_path / "seeds")
    assert code == 1 and "refused without running" in err
    assert not marker.exists() and not (tmp_path / "seeds").exists()


def test_case10_cam_checkpoints_written_by_sepl_still_load(tmp_path):
    import torch

    from sepl.cam.net import build_cam_net, net_config
    from sepl.cam.train import TrainConfig, load_cam_model, load_checkpoint

    net = build_cam_net("tiny", ["background", "a", "b"], 8, width=8)
    state = dict(model=net.state_dict(), epoch=0, args=TrainConfig(arch="tiny", width=8), net=net_config(net),
                 history=[{"loss": np.float64(0.5), "epoch": 0}])
    old = tmp_path / "old.pth"
    torch.save(state, old)  # an older writer: a TrainConfig object and numpy scalars inside
    with pytest.raises(SeplError, match="refused"):
        load_checkpoint(old)  # numpy scalars are not plain values: refused too, not run
    from sepl.safeload import plain

    state["history"] = plain(state["history"])
    torch.save(state, old)
    ckpt = load_checkpoint(old)  # the config dataclass is accepted and turned into a dict
    assert ckpt["args"] == TrainConfig(arch="tiny", width=8).to_dict()
    assert load_cam_model(old).class_names == ["background", "a", "b"]


def test_case10_deeplab_resume_and_predict_with_payload_are_refused_without_running(tmp_path, synth_voc, capsys):
    from sepl.deeplab.predict import load_checkpoint

    marker = tmp_path / "ran"
    run = tmp_path / "run"
    run.mkdir()
    evil = _evil_torch(run / "checkpoint.pth", marker,
                       wrap=lambda p: {"model": {}, "args": {"model": "deeplabv3_tiny", "x": p}})
    with pytest.raises(SeplError, match="refused without running"):
        load_checkpoint(str(evil))  # --predict-with
    code, out, err = _cli(capsys, "train", "--data", synth_voc, "--out", run, "--resume", "--model",
                          "deeplabv3_tiny", "--num-classes", 6, "--epochs", 1, "-b", 2, "--val-split", "none",
                          "--workers", 0, "--device", "cpu")
    assert code == 1 and "refused without running" in err
    assert not marker.exists()


def test_case10_grounding_dino_checkpoint_payload_is_refused_without_running(tmp_path):
    pytest.importorskip("groundingdino")
    from sepl.grounded.detectors import GroundingDinoPy
    from sepl.grounded.tiny import GDINO_TINY_OVERRIDES, write_tiny_text_encoder

    marker = tmp_path / "ran"
    evil = _evil_torch(tmp_path / "gdino.pth", marker)
    text = write_tiny_text_encoder(tmp_path / "bert")
    with pytest.raises(SeplError, match="refused without running"):
        GroundingDinoPy("SwinT_OGC", str(evil), text, size=96, max_size=160, overrides=GDINO_TINY_OVERRIDES)
    assert not marker.exists()


def test_case10_cam_npy_payload_is_refused_and_plain_cam_dicts_import(synth_dataset, tmp_path):
    from sepl.fo.importers import import_cams

    ds = synth_dataset
    folder = tmp_path / "cams"
    folder.mkdir()
    marker = tmp_path / "ran"
    stems = sorted(Path(s.filepath).stem for s in ds)
    h, w = ds.first().metadata.height, ds.first().metadata.width
    for sid in stems:  # IRN/AMN's format: np.save of a dict (a pickled 0-d object array)
        cam = np.zeros((1, h, w), np.float32)
        cam[0, :10, :10] = 1
        np.save(folder / f"{sid}.npy", {"keys": np.array([1]), "high_res": cam})
    np.save(folder / f"{stems[0]}.npy", np.array({"keys": _Payload(marker)}, dtype=object), allow_pickle=True)
    before = _snapshot(ds)
    with pytest.raises(SeplError) as e:
        import_cams(ds, str(folder), field="seeds", bg_threshold=0.5)
    assert not marker.exists()
    assert "refused without running" in str(e.value) and f"{len(stems) - 1} written" in str(e.value)
    from sepl.fo.convert import load_label_map

    other = ds.match({"filepath": {"$regex": f"{stems[1]}\\.jpg$"}}).first()
    assert (load_label_map(other, "seeds")[:10, :10] == 2).all()  # key 1 -> class 2
    assert _without(_snapshot(ds)[0], "seeds") == _without(before[0], "seeds")
    from sepl.safeload import load_npy

    with pytest.raises(SeplError, match="refused without running"):
        load_npy(folder / f"{stems[0]}.npy")
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps(_Payload(marker)))  # a bare pickle named .npy
    with pytest.raises(SeplError, match="refused without running"):
        load_npy(tmp_path / "raw.pkl")
    assert not marker.exists()


# -- 13: CI requires the shared data ------------------------------------------------------------


def test_case13_ci_fails_instead_of_skipping_without_the_shared_data(tmp_path):
    probe = tmp_path / "test_probe.py"
    probe.write_text("def test_needs_data(voc_train):\n    assert voc_train.is_dir()\n")
    (tmp_path / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text())
    env = dict(os.environ, SEPL_SHARED_DATA=str(tmp_path / "nowhere"), PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(probe)]
    env.pop("SEPL_REQUIRE_SHARED_DATA", None)
    skipped = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout
    failed = subprocess.run(cmd, env=dict(env, SEPL_REQUIRE_SHARED_DATA="1"), capture_output=True, text=True,
                            cwd=tmp_path)
    assert failed.returncode == 1 and "SEPL_REQUIRE_SHARED_DATA" in failed.stdout
    # .ci/run sets both, pointing at ../shared/data beside the checkout
    script = (REPO / ".ci" / "run").read_text()
    assert "export SEPL_REQUIRE_SHARED_DATA=1" in script and "shared/data" in script
    shown = subprocess.run(["bash", "-c", "cd \"$1\" && eval \"$(grep -E '^(SEPL_SHARED_DATA=|export SEPL_)' .ci/run)\""
                            " && echo $SEPL_SHARED_DATA $SEPL_REQUIRE_SHARED_DATA", "_", str(REPO)],
                           env={k: v for k, v in os.environ.items() if k != "SEPL_SHARED_DATA"},
                           capture_output=True, text=True)
    assert shown.stdout.split() == [str(REPO.parent / "shared" / "data"), "1"]


# -- issue 13's CLI bullets ----------------------------------------------------------------------


def test_import_folder_without_classes_takes_the_class_order_from_the_data_or_refuses(dataset, tmp_path):
    from sepl.classes import VOC_CLASSES
    from sepl.fo.importers import import_folder

    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(np.zeros((8, 9, 3), np.uint8)).save(tmp_path / name)
    (tmp_path / "odd.csv").write_text("filename,tags\na.jpg,widget\nb.jpg,gadget\n")
    with pytest.raises(SeplError, match="no class order") as e:
        import_folder(tmp_path, tmp_path / "odd.csv", dataset=dataset)
    assert "--classes" in str(e.value) and len(dataset) == 0 and not dataset.default_mask_targets
    # VOC tags: VOC's index order (dog = 12), as VOC-indexed seeds expect; not background, cat, dog
    (tmp_path / "voc.csv").write_text("filename,tags\na.jpg,dog\nb.jpg,cat\n")
    import_folder(tmp_path, tmp_path / "voc.csv", dataset=dataset)
    assert dataset.default_mask_targets == dict(enumerate(VOC_CLASSES))


def test_cli_label_field_default_worst_scores_resume_message(synth_dataset, tmp_path, capsys):
    from sepl.cli import build_parser
    from sepl.fo.importers import import_seeds

    args = build_parser().parse_args(["cam", "infer", "--dataset", "x", "--checkpoint", "c"])
    assert args.labels_field == "image_labels"  # what `sepl import voc` writes
    ds = synth_dataset
    ds.persistent = True
    try:
        seeds = tmp_path / "seeds"
        for sid, gt in _gt_labels(ds).items():
            write_label(seeds / f"{sid}.png", gt)
        import_seeds(ds, str(seeds), field="pred")
        code, out, err = _cli(capsys, "import", "seeds", "--dataset", ds.name, "--folder", seeds, "--field", "pred")
        assert code == 0 and f"all {len(ds)} samples already done (resumed)" in out
        code, out, err = _cli(capsys, "evaluate", "--dataset", ds.name, "--pred", "pred", "--worst", 2)
        assert code == 0, err
        worst = [ln for ln in out.splitlines() if ln.startswith("worst: ")]
        assert len(worst) == 2 and all(ln.endswith("pred_miou 1.0000") for ln in worst)
    finally:
        ds.persistent = False


def test_cli_does_not_print_mongodbs_deprecation_notice(tmp_path):
    # a user's environment: FiftyOne's notice shows when neither is set
    env = {k: v for k, v in os.environ.items() if k not in ("FIFTYONE_DATABASE_VALIDATION", "FIFTYONE_DO_NOT_TRACK")}
    env["PYTHONPATH"] = str(REPO)
    res = subprocess.run([sys.executable, "-m", "sepl", "refine", "--dataset", "no-such-dataset-safety",
                          "--seeds", "a", "--masks", "b"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 1 and "no FiftyOne dataset 'no-such-dataset-safety'" in res.stderr
    shown = (res.stdout + res.stderr).lower()  # FiftyOne prints the notice on stdout
    assert "deprecation" not in shown and "database_validation" not in shown
