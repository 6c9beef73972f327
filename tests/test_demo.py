"""``sepl demo`` end to end on a few small scenes, the simulated seeds, the CAM network, and the App."""

import json
import shutil
import socket
import subprocess
import uuid
import urllib.request

import numpy as np
import pytest

from sepl.errors import SeplError
from sepl.seedsim import PRESETS, SeedSimConfig, cams_to_seed, gaussian_blur, simulate_cams, simulate_seed
from sepl.synth import make_scene


def _miou(pred, gt, c=6):
    keep = gt != 255
    m = np.bincount(gt[keep].astype(int) * c + pred[keep], minlength=c * c).reshape(c, c)
    tp = np.diag(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(tp / (m.sum(0) + m.sum(1) - tp))


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(3)
    return [make_scene(rng, size=(96, 120), boundary=2)[1] for _ in range(12)]


def test_seedsim_is_reproducible_and_cam_like(scenes):
    gt = scenes[0]
    a = simulate_seed(gt, 6, np.random.default_rng(7))
    b = simulate_seed(gt, 6, np.random.default_rng(7))
    assert a.dtype == np.uint8 and a.shape == gt.shape
    assert np.array_equal(a, b)
    for gt in scenes:
        seed = simulate_seed(gt, 6, np.random.default_rng(1))
        present = set(np.unique(gt).tolist()) - {0, 255}
        # image-level labels are known: no class outside them, no ignore value
        assert set(np.unique(seed).tolist()) <= present | {0}
    cams = simulate_cams(scenes[1], 6, np.random.default_rng(0))
    assert cams.shape == (5, 96, 120) and cams.dtype == np.float32
    for c in range(1, 6):
        peak = cams[c - 1].max()
        assert peak == pytest.approx(1.0) if c in scenes[1] else peak == 0


def test_seedsim_presets_order_quality(scenes):
    scores = {}
    for name, cfg in PRESETS.items():
        rng = np.random.default_rng(0)
        scores[name] = np.mean([_miou(simulate_seed(gt, 6, rng, cfg), gt) for gt in scenes])
    assert scores["mild"] > scores["cam"] > scores["harsh"]
    # imperfect, but far from empty: what CAM seeds look like
    assert 0.45 < scores["cam"] < 0.85
    perfect = SeedSimConfig(blur=0, focus=0, bg_threshold=(0.5, 0.5), shift=0, part_drop=0, context=0)
    assert np.mean([_miou(simulate_seed(gt, 6, np.random.default_rng(0), perfect), gt) for gt in scenes]) > 0.97


def test_cams_to_seed_and_blur():
    cams = np.zeros((2, 4, 4), np.float32)
    cams[0, :2] = 0.9
    cams[1, :, :2] = 0.5
    seed = cams_to_seed(cams, 0.3)
    assert seed[0, 0] == 1 and seed[3, 0] == 2 and seed[3, 3] == 0
    # a class that is not among the image's labels never wins
    assert 2 not in cams_to_seed(cams, 0.3, present=[1])
    x = np.zeros((31, 31), np.float32)
    x[15, 15] = 1
    y = gaussian_blur(x, 3.0)
    assert y.sum() == pytest.approx(1.0, abs=1e-4) and y[15, 15] == y.max()
    assert np.allclose(y, y.T, atol=1e-6)


def test_mask_plan_picks_sam_only_with_a_checkpoint(tmp_path, monkeypatch):
    from sepl.demo import DemoConfig, describe_masks, mask_plan

    monkeypatch.delenv("SEPL_SAM_CHECKPOINT", raising=False)
    plan = mask_plan(DemoConfig())
    assert plan["source"] == "superpixels" and "NOT SAM" in describe_masks(plan)
    with pytest.raises(SeplError, match="checkpoint"):
        mask_plan(DemoConfig(masks="sam"))
    ckpt = tmp_path / "sam_vit_b_01ec64.pth"
    monkeypatch.setenv("SEPL_SAM_CHECKPOINT", str(ckpt))
    plan = mask_plan(DemoConfig())
    assert plan["source"] == "sam_auto" and plan["model_type"] == "vit_b" and plan["checkpoint"] == str(ckpt)
    assert mask_plan(DemoConfig(masks="superpixels"))["source"] == "superpixels"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _render(url: str) -> str:
    """The DOM of ``url`` after headless Chromium ran its scripts."""
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--virtual-time-budget=20000",
           "--dump-dom", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def test_demo_end_to_end_reuses_and_serves_the_app(tmp_path, capsys):
    import fiftyone as fo

    from sepl.cli import main
    from sepl.demo import SEPL, WORST_VIEW, app_url, launch_app

    name = f"sepl-demo-test-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out"
    argv = ["demo", "--no-app", "--name", name, "--num-images", "8", "--size", "96x120", "--seeds", "simulated",
            "--data-dir", str(tmp_path / "data"), "--output", str(out)]
    try:
        assert main(argv) == 0
        text = capsys.readouterr().out
        assert "NOT SAM" in text and "mIoU" in text and "seeds" in text
        assert "simulated CAM seeds" in text and "NOT a network" in text
        summary = json.loads((out / "summary.json").read_text())
        assert summary["num_samples"] == 8 and len(summary["seed_iou"]) == 6
        # the classical masks still make SEPL better than the seeds on these scenes
        assert summary["sepl_miou"] > summary["seed_miou"] + 0.03
        for key in ("iou_plot", "overlay"):
            assert (out / f"{'class_iou' if key == 'iou_plot' else 'before_after'}.png").stat().st_size > 1000
        ds = fo.load_dataset(name)
        assert ds.persistent and len(ds) == 8
        ids = ds.values("id")
        seeds_before = ds.first()["seeds"].get_mask().copy()

        # a rerun reuses the dataset and every field
        assert main(argv) == 0
        text = capsys.readouterr().out
        assert "reusing dataset" in text and "recomputing" not in text
        ds.reload()
        assert ds.values("id") == ids
        assert json.loads((out / "summary.json").read_text())["sepl_miou"] == pytest.approx(summary["sepl_miou"])
        assert np.array_equal(ds.first()["seeds"].get_mask(), seeds_before)

        # the worst-samples view is saved and sorted
        worst = ds.load_saved_view(WORST_VIEW)
        scores = worst.values(f"{SEPL}_miou")
        assert scores == sorted(scores) and len(scores) == 8

        # the App serves the dataset (remote mode, no browser)
        port = _free_port()
        session = launch_app(ds, port=port, wait=False)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
                assert r.status == 200 and b"<html" in r.read().lower()
            assert session.dataset.name == name
            if shutil.which("chromium"):
                dom = _render(app_url(ds, port))
                # the App rendered the dataset, the saved view and the per-sample scores
                assert name in dom and WORST_VIEW in dom
                assert f"{SEPL}_miou" in dom and "seeds_miou" in dom
        finally:
            session.close()

        # other seeds: the seeds are replaced and SEPL is merged again from them
        assert main(argv + ["--seed-preset", "harsh"]) == 0
        text = capsys.readouterr().out
        assert "'seeds' was made with other settings" in text and "recomputing 'sepl'" in text
        harsh = json.loads((out / "summary.json").read_text())
        assert harsh["seed_miou"] < summary["seed_miou"]
        assert harsh["sepl_miou"] != pytest.approx(summary["sepl_miou"])
        ds.reload()
        assert ds.values("id") == ids and not np.array_equal(ds.first()["seeds"].get_mask(), seeds_before)

        # --fresh rebuilds: new samples
        assert main(argv + ["--fresh"]) == 0
        capsys.readouterr()
        assert set(fo.load_dataset(name).values("id")).isdisjoint(ids)
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def test_demo_with_the_cam_network_trains_once_and_reuses_it(tmp_path, capsys):
    import fiftyone as fo

    from sepl.cli import main
    from sepl.demo import CAM_DIR, LABELS, SEEDS
    from sepl.fo.convert import image_labels
    from sepl.synth import SYNTH_CLASSES

    name = f"sepl-demo-test-{uuid.uuid4().hex[:8]}"
    out, data = tmp_path / "out", tmp_path / "data"
    argv = ["demo", "--no-app", "--name", name, "--num-images", "8", "--size", "96x120", "--seeds", "cam",
            "--cam-epochs", "3", "--cam-crop", "64", "--data-dir", str(data), "--output", str(out)]
    try:
        assert main(argv) == 0
        text = capsys.readouterr().out
        assert "training the CAM network" in text and "seeds: CAM network" in text and "simulated" not in text
        summary = json.loads((out / "summary.json").read_text())
        assert summary["seed_source"].startswith("CAM network") and summary["num_samples"] == 8
        assert np.isfinite(summary["seed_miou"]) and np.isfinite(summary["sepl_miou"])
        ckpt = data / CAM_DIR / "checkpoint.pth"
        stamp = ckpt.stat().st_mtime_ns
        ds = fo.load_dataset(name)
        # WSSS: the network saw only the image-level labels; its seeds use no other class
        for s in ds:
            present = {SYNTH_CLASSES.index(n) for n in image_labels(s, LABELS)}
            assert set(np.unique(s[SEEDS].get_mask()).tolist()) <= present | {0}
        assert ds.get_field(SEEDS) is not None and ds.mask_targets[SEEDS][1] == SYNTH_CLASSES[1]
        seeds_before = [s[SEEDS].get_mask().copy() for s in ds]

        # a rerun loads the trained network and reuses its seeds
        assert main(argv) == 0
        text = capsys.readouterr().out
        assert "reusing the trained CAM network" in text and "training the CAM network" not in text
        assert "recomputing" not in text and ckpt.stat().st_mtime_ns == stamp
        assert json.loads((out / "summary.json").read_text())["seed_miou"] == pytest.approx(summary["seed_miou"])

        # other training settings retrain the network and replace the seeds, then SEPL
        assert main(argv + ["--cam-epochs", "4"]) == 0
        text = capsys.readouterr().out
        assert "training the CAM network (cpu-tiny, 4 epochs" in text and "recomputing 'sepl'" in text
        ds.reload()
        assert any(not np.array_equal(s[SEEDS].get_mask(), b) for s, b in zip(ds, seeds_before))

        # simulated seeds replace the network's
        assert main(argv + ["--seeds", "simulated"]) == 0
        text = capsys.readouterr().out
        assert "'seeds' was made with other settings" in text and "NOT a network" in text
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
