"""End to end: export a generated dataset, train a tiny DeepLab on CPU, resume, predict back
onto the samples, evaluate; plus the CLI and the "Train DeepLab" operator."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sepl.errors import SeplError

TINY = dict(model="deeplabv3_tiny", batch_size=2, crop_size=64, workers=0, print_freq=1, lr=0.02)


def _records(run, kind):
    return [json.loads(ln) for ln in (Path(run) / "metrics.jsonl").read_text().splitlines()
            if json.loads(ln)["type"] == kind]


def test_export_train_resume_predict_evaluate(synth_dataset, tmp_path):
    import fiftyone as fo

    from sepl.fo.convert import get_mask_targets, load_label_map
    from sepl.fo.deeplab import DeepLabModel, predict_to_field, train_from_view
    from sepl.metrics import ConfusionMatrix

    run = tmp_path / "run"
    seen = []
    res = train_from_view(synth_dataset, "ground_truth", run, val_fraction=0.25, epochs=1, iters_per_epoch=2,
                          progress=lambda f, msg: seen.append((f, msg)), **TINY)
    assert res["export"]["splits"] == {"train": 6, "val": 2}
    assert res["best_miou"] is not None and 0.0 <= res["best_miou"] <= 1.0
    assert res["iters_per_s"] > 0 and res["device"] == "cpu" and res["num_classes"] == 6
    for name in ("checkpoint.pth", "model_best.pth", "metrics.jsonl", "loss.png", "miou.png", "config.json",
                 "data/ImageSets/Segmentation/train.txt"):
        assert (run / name).exists(), name
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and "mIoU" in seen[-1][1]
    ckpt = torch.load(run / "checkpoint.pth", weights_only=False)
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "epoch", "args"}
    assert ckpt["epoch"] == 0 and ckpt["scheduler"]["last_epoch"] == 2
    assert ckpt["classes"] == list(get_mask_targets(synth_dataset, "ground_truth").values())

    # a second run in the same folder is refused unless resumed or overwritten
    with pytest.raises(SeplError, match="already"):
        train_from_view(synth_dataset, "ground_truth", run, val_fraction=0.25, epochs=1, **TINY)

    # resume to 2 epochs: the schedule continues (iterations 3-4) and the log grows
    weights_before = {k: v.clone() for k, v in ckpt["model"].items()}
    res2 = train_from_view(synth_dataset, "ground_truth", run, val_fraction=0.25, epochs=2, iters_per_epoch=2,
                           resume=True, **TINY)
    assert res2["export"]["reused"]
    ckpt2 = torch.load(run / "checkpoint.pth", weights_only=False)
    assert ckpt2["epoch"] == 1 and ckpt2["scheduler"]["last_epoch"] == 4
    assert [r["iter"] for r in _records(run, "train")] == [1, 2, 3, 4]
    assert [r["epoch"] for r in _records(run, "val")] == [0, 1]
    assert _records(run, "train")[-1]["lr"] == 0.0  # poly decay reaches 0 at the last iteration
    assert any(not torch.equal(v, weights_before[k]) for k, v in ckpt2["model"].items())

    # predictions back onto the samples, as a Segmentation field with the classes as mask targets
    out = predict_to_field(synth_dataset, run / "model_best.pth", "deeplab")
    assert out["predicted"] == len(synth_dataset) and not out["resumed"]
    assert get_mask_targets(synth_dataset, "deeplab")[1] == "disc"
    cm = ConfusionMatrix(num_classes=6, ignore_index=255)
    for s in synth_dataset:
        pred = load_label_map(s, "deeplab", shape=(s.metadata.height, s.metadata.width))
        assert pred.dtype == np.uint8 and pred.max() < 6
        cm.update(pred, load_label_map(s, "ground_truth"))
    assert cm.matrix.sum() > 0 and 0.0 <= cm.miou() <= 1.0
    # rerun: resumes with nothing left; another checkpoint into the same field is refused
    assert predict_to_field(synth_dataset, run / "model_best.pth", "deeplab")["predicted"] == 0
    with pytest.raises(SeplError, match="already exists"):
        predict_to_field(synth_dataset, run / "checkpoint.pth", "deeplab")

    # the same model through FiftyOne's own apply_model, sliding-window mode
    model = DeepLabModel.from_checkpoint(run / "model_best.pth", mode="slide", crop_size=64)
    synth_dataset.limit(2).apply_model(model, label_field="deeplab_slide")
    s = synth_dataset.first()
    assert isinstance(s.deeplab_slide, fo.Segmentation)
    assert s.deeplab_slide.mask.shape == (s.metadata.height, s.metadata.width)


def test_training_learns_on_cpu(tmp_path):
    """Not only runs: a few dozen iterations on a single-class toy set beat chance by far."""
    from sepl.deeplab.config import TrainConfig
    from sepl.deeplab.train import train
    from sepl.labelio import write_label
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "toy"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    ids = []
    for k in range(6):
        img = rng.integers(0, 60, (48, 48, 3)).astype(np.uint8)
        label = np.zeros((48, 48), np.uint8)
        y, x = rng.integers(4, 24, 2)
        label[y:y + 20, x:x + 20] = 1
        img[label == 1] = (220, 40, 40)
        Image.fromarray(img).save(root / "JPEGImages" / f"t{k}.jpg", quality=95)
        write_label(root / "SegmentationClass" / f"t{k}.png", label)
        ids.append(f"t{k}")
    # 4 images listed 5 times: 10 iterations an epoch, so few (slow) validations and plots
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[:4] * 5))
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids[4:]))
    cfg = TrainConfig(data_dir=str(root), out_dir=str(tmp_path / "r"), num_classes=2, epochs=6,
                      scale_min=0.9, scale_max=1.1, **dict(TINY, crop_size=48, batch_size=2, lr=0.05,
                                                           print_freq=50))
    res = train(cfg, verbose=False)
    assert res["best_miou"] > 0.6, res


def test_cli_train_on_an_exported_folder_and_predict(synth_dataset, tmp_path, capsys):
    from sepl.cli import main

    data = tmp_path / "data"
    assert main(["export", "--dataset", synth_dataset.name, "--field", "ground_truth", "--out", str(data),
                 "--val-fraction", "0.25"]) == 0
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--model", "deeplabv3_tiny",
            "--epochs", "1", "--iters-per-epoch", "1", "-b", "2", "--crop-size", "64", "-j", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "validation mIoU" in out and "it/s on cpu" in out
    assert main(args) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(args + ["--resume", "--epochs", "2"]) == 0
    assert "resumed" in capsys.readouterr().out
    assert main(["train", "--dataset", synth_dataset.name, "--out", str(tmp_path / "run"), "--predict-with",
                 str(tmp_path / "run" / "model_best.pth"), "--predict-field", "pred"]) == 0
    assert synth_dataset.count("pred") == len(synth_dataset)
    assert main(["train", "--out", str(tmp_path / "x")]) == 1
    assert "nothing to train on" in capsys.readouterr().err
    # no validation list and no manifest: clear errors
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "y"), "--num-classes", "3",
                 "--model", "deeplabv3_tiny"]) == 1  # (a ResNet without weights is refused first)
    assert "not a VOC-layout folder" in capsys.readouterr().err


def test_train_refuses_bad_input(synth_dataset, tmp_path):
    from sepl.fo.deeplab import train_from_view

    with pytest.raises(SeplError, match="empty"):
        train_from_view(synth_dataset.limit(0), "ground_truth", tmp_path / "a", **TINY)
    with pytest.raises(SeplError, match="at least 2"):
        train_from_view(synth_dataset.limit(1), "ground_truth", tmp_path / "b", val_fraction=0.0, **TINY)
    # the failed run left only its export: a corrected rerun in the same folder needs no overwrite
    res = train_from_view(synth_dataset.limit(3), "ground_truth", tmp_path / "b", val_fraction=0.0, epochs=1,
                          iters_per_epoch=1, **TINY)
    assert res["best_miou"] is None and res["export"]["splits"] == {"train": 3}
    assert (tmp_path / "b" / "model_best.pth").exists()  # without validation: the last model
    with pytest.raises(SeplError, match="nothing to resume"):
        train_from_view(synth_dataset, "ground_truth", tmp_path / "c", resume=True, **TINY)


@pytest.fixture
def plugin_dir(monkeypatch, tmp_path):
    import fiftyone as fo

    repo = Path(__file__).resolve().parent.parent
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "sepl").symlink_to(repo, target_is_directory=True)
    monkeypatch.setenv("FIFTYONE_PLUGINS_DIR", str(d))
    monkeypatch.setattr(fo.config, "plugins_dir", str(d))
    return d


def test_train_deeplab_operator_immediate_and_delegated(synth_dataset, tmp_path, plugin_dir):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    params = dict(label_field="ground_truth", out_dir=str(tmp_path / "op"), model="deeplabv3_tiny",
                  epochs=1, iters_per_epoch=1, batch_size=2, crop_size=64, workers=0, val_fraction=0.25,
                  predict_field="op_pred", target="DATASET")
    res = foo.execute_operator("@sepl/sepl/train_deeplab", ctx=dict(dataset=synth_dataset, view=synth_dataset.view(),
                                                                    params=dict(params, delegate=False)))
    assert res.result["best_miou"] is not None and res.result["predict_field"] == "op_pred"
    assert Path(res.result["checkpoint"]).exists()
    assert synth_dataset.count("op_pred") == len(synth_dataset)

    # delegated (Schedule, the App's first choice): queued, then run by an executor, with progress reported
    synth_dataset.persistent = True  # delegated operations need a dataset that outlives the request
    try:
        foo.execute_operator("@sepl/sepl/train_deeplab", ctx=dict(
            dataset=synth_dataset, view=synth_dataset.view(),
            params=dict(params, out_dir=str(tmp_path / "op2"), predict_field="op_pred2")),
            request_delegation=True)  # the App offers Schedule first
        svc = DelegatedOperationService()
        svc.execute_queued_operations(dataset_name=synth_dataset.name)
        ops = svc.list_operations(dataset_name=synth_dataset.name)
        assert len(ops) == 1
        op = ops[0]
        assert op.run_state == "completed", getattr(op.run_state, "value", op.run_state)
        assert op.status.progress == 1.0 and "mIoU" in op.status.label
        assert op.result.result["best_miou"] is not None
        svc.delete_for_dataset(synth_dataset.name)
    finally:
        synth_dataset.persistent = False
