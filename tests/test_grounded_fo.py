"""Grounded-SAM on FiftyOne samples: both detectors (tiny, random weights) + tiny SAM,
resume, empty tags / no box, apply_model, the operator and the CLI."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sepl.errors import SeplError  # noqa: E402
from sepl.grounded.pipeline import GroundedConfig  # noqa: E402
from sepl.grounded.tiny import (GDINO_TINY_OVERRIDES, write_tiny_hf_grounding_dino,  # noqa: E402
                                write_tiny_text_encoder)
from sepl.synth import SYNTH_CLASSES, image_level_labels  # noqa: E402

pytest.importorskip("segment_anything")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("grounded_models")
    return dict(text_encoder=str(write_tiny_text_encoder(root / "bert")),
                hf_model=str(write_tiny_hf_grounding_dino(root / "hf")))


def _configs(tiny_dirs):
    return {
        "groundingdino": GroundedConfig(backend="groundingdino", text_encoder=tiny_dirs["text_encoder"],
                                        sam_model="tiny", random_weights=True, size=96, max_size=160,
                                        detector_overrides=GDINO_TINY_OVERRIDES, preset="none"),
        "transformers": GroundedConfig(backend="transformers", hf_model=tiny_dirs["hf_model"], sam_model="tiny",
                                       random_weights=True, preset="none"),
    }


@pytest.fixture
def tagged(synth_dataset):
    """The synth scenes with their image-level labels; the first sample has none."""
    import fiftyone as fo

    from sepl.fo.convert import load_label_map, to_classifications

    ds = synth_dataset.limit(4).clone()
    for i, s in enumerate(ds.iter_samples(autosave=True)):
        gt = load_label_map(s, "ground_truth")
        names = [] if i == 0 else [SYNTH_CLASSES[c] for c in image_level_labels(gt)]
        s["image_labels"] = to_classifications(names)
    ds.default_mask_targets = dict(enumerate(SYNTH_CLASSES))
    ds.save()
    try:
        yield ds
    finally:
        if fo.dataset_exists(ds.name):
            fo.delete_dataset(ds.name)


@pytest.mark.parametrize("backend", ["groundingdino", "transformers"])
def test_pipeline_on_samples_both_backends(tagged, tiny_dirs, backend):
    import fiftyone as fo

    from sepl.fo.convert import detections_to_masks, image_shape, load_label_map
    from sepl.fo.grounded import grounded_pseudo_labels

    if backend == "groundingdino":
        pytest.importorskip("groundingdino")
    cfg = _configs(tiny_dirs)[backend]
    summary = grounded_pseudo_labels(tagged, "image_labels", "gsam", config=cfg, device="cpu", batch_size=2)
    assert summary["samples"] == 4 and not summary["resumed"]
    c = summary["counts"]
    assert c["empty_tags"] == 1                         # the untagged sample: counted, background
    assert any("no image-level labels" in w for _, w in summary["warnings"])
    assert tagged.mask_targets["gsam"] == dict(enumerate(SYNTH_CLASSES))
    kept = 0
    for i, s in enumerate(tagged.iter_samples()):
        h, w = image_shape(s)
        label = load_label_map(s, "gsam", (h, w))
        dets = s["gsam_detections"]
        assert isinstance(dets, fo.Detections)
        tags = {x.label for x in s["image_labels"].classifications}
        if i == 0:
            assert not label.any() and len(dets.detections) == 0
            continue
        # every painted class is one of the image's tags; every box carries phrase + scores
        assert {SYNTH_CLASSES[v] for v in np.unique(label) if v} <= tags
        for d in dets.detections:
            assert d.label in tags and d.phrase == d.label and 0 <= d.confidence <= 1
            assert len(d.detector_box) == 4 and d.sam_score is not None
        masks = detections_to_masks(dets, h, w)
        # the label map is exactly the masks painted by the default rule
        from sepl.grounded.labelmap import paint_label_map

        cls = np.array([SYNTH_CLASSES.index(d.label) for d in dets.detections], np.int64)
        conf = np.array([d.confidence for d in dets.detections])
        expect = paint_label_map(masks, cls, conf, shape=(h, w), rule=cfg.rule, dedup_iou=cfg.dedup_iou)
        np.testing.assert_array_equal(label, expect)
        kept += len(dets.detections)
    assert kept == c["kept"]


def test_resume_protect_and_no_box(tagged, tiny_dirs):
    from sepl.fo.convert import load_label_map
    from sepl.fo.grounded import grounded_pseudo_labels

    cfg = _configs(tiny_dirs)["transformers"]
    first = tagged.limit(2)
    grounded_pseudo_labels(first, "image_labels", "gsam", config=cfg, device="cpu")
    # same parameters: resumes and does only the samples still missing
    again = grounded_pseudo_labels(tagged, "image_labels", "gsam", config=cfg, device="cpu")
    assert again["resumed"] and again["samples"] == 2
    assert grounded_pseudo_labels(tagged, "image_labels", "gsam", config=cfg, device="cpu")["samples"] == 0
    # other parameters: the field is protected unless overwrite
    strict = GroundedConfig(**dict(cfg.run_params(), box_threshold=1.0))
    with pytest.raises(SeplError, match="already exists"):
        grounded_pseudo_labels(tagged, "image_labels", "gsam", config=strict, device="cpu")
    # nothing can beat a threshold of 1: all background, counted and warned, no crash
    s = grounded_pseudo_labels(tagged, "image_labels", "gsam", config=strict, device="cpu", overwrite=True)
    assert s["counts"]["no_detection"] == 3 and s["counts"]["empty_tags"] == 1 and s["counts"]["kept"] == 0
    assert sum("no box kept" in w for _, w in s["warnings"]) == 3
    for smp in tagged.iter_samples():
        assert not load_label_map(smp, "gsam").any() and len(smp["gsam_detections"].detections) == 0


def test_missing_checkpoints_name_the_file(tagged, tiny_dirs):
    from sepl.fo.grounded import grounded_pseudo_labels

    with pytest.raises(SeplError, match="no Grounding DINO checkpoint given.*groundingdino_swint_ogc.pth"):
        GroundedConfig(text_encoder=tiny_dirs["text_encoder"]).build_detector()
    with pytest.raises(SeplError, match="no SAM checkpoint given.*sam_vit_h_4b8939.pth"):
        GroundedConfig().build_segmenter()
    with pytest.raises(SeplError, match="needs a Hugging Face Grounding DINO folder"):
        GroundedConfig(backend="transformers").build_detector()
    cfg = GroundedConfig(backend="transformers", hf_model="/nowhere/gdino", sam_model="tiny", random_weights=True)
    with pytest.raises(SeplError, match="/nowhere/gdino does not exist"):
        grounded_pseudo_labels(tagged, "image_labels", "gsam", config=cfg, device="cpu")


def test_apply_model(tagged, tiny_dirs):
    import fiftyone as fo

    from sepl.fo.grounded import GroundedSAMModel

    pipe = _configs(tiny_dirs)["transformers"].build(SYNTH_CLASSES)
    model = GroundedSAMModel(pipe, tags_field="image_labels")
    tagged.apply_model(model, label_field="am", batch_size=2)
    tagged.apply_model(model, label_field="am2", tags_field="image_labels")
    s = tagged.skip(1).first()
    assert isinstance(s["am_labels"], fo.Segmentation) and isinstance(s["am_detections"], fo.Detections)
    assert s["am_labels"].mask.shape == (s.metadata.height, s.metadata.width)
    assert not tagged.first()["am_labels"].mask.any()


def test_operator_and_cli(tagged, tiny_dirs, monkeypatch, tmp_path):
    from pathlib import Path

    import fiftyone as fo
    import fiftyone.operators as foo

    from sepl.cli import main

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "sepl").symlink_to(repo, target_is_directory=True)
    monkeypatch.setenv("FIFTYONE_PLUGINS_DIR", str(tmp_path))
    monkeypatch.setattr(fo.config, "plugins_dir", str(tmp_path))
    tagged.persistent = True  # the CLI loads it by name
    params = dict(tags_field="image_labels", backend="transformers", hf_model=tiny_dirs["hf_model"], sam_model="tiny",
                  random_weights=True, preset="none", label_field="op", delegate=False, device="cpu")
    res = foo.execute_operator("@sepl/sepl/grounded_sam_pseudo_labels", ctx=dict(dataset=tagged, params=params))
    res.raise_exceptions()
    assert res.result["processed"] == 4 and res.result["all_background"] >= 1
    r = res.result
    assert (f"- left all background (no tags or no box): **{r['all_background']}**\n- boxes kept: "
            f"**{r['boxes_kept']}**; dropped (phrase not matched): **{r['boxes_dropped']}**") in r["summary"]
    assert "Failed" not in r["summary"]
    tagged.reload()
    assert tagged.count("op") == 4 and tagged.has_field("op_detections")
    code = main(["grounded", "--dataset", tagged.name, "--tags-field", "image_labels", "--label-field", "cli",
                 "--backend", "transformers", "--hf-model", tiny_dirs["hf_model"], "--sam-model", "tiny",
                 "--random-weights", "--preset", "none", "--device", "cpu"])
    assert code == 0
    tagged.reload()
    assert tagged.count("cli") == 4
    a = [s["op"].mask for s in tagged.iter_samples()]
    b = [s["cli"].mask for s in tagged.iter_samples()]
    for x, y in zip(a, b):  # same models, same options: same labels
        np.testing.assert_array_equal(x, y)
    assert main(["grounded", "--dataset", "no-such-dataset", "--tags-field", "t"]) == 1
