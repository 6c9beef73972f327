"""SAM 3 pseudo-labels on FiftyOne samples (tiny random Sam3Model): fields, resume, failures,
SEPL refine on the SAM 3 instances, apply_model, the operator and the CLI."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("torch")
pytest.importorskip("transformers")

import fiftyone as fo  # noqa: E402

from sepl.errors import SeplError  # noqa: E402
from sepl.sam3 import Sam3Config  # noqa: E402
from sepl.synth import SYNTH_CLASSES, image_level_labels  # noqa: E402

CFG = Sam3Config(random_weights=True, preset="none", score_threshold=0.2)


@pytest.fixture(scope="module")
def pipe():
    return CFG.build(SYNTH_CLASSES, device="cpu")


@pytest.fixture
def tagged(synth_dataset):
    """Four synth scenes with their image-level labels; the first has none."""
    from sepl.fo.convert import load_label_map, to_classifications

    ds = synth_dataset.limit(4).clone()
    for i, s in enumerate(ds.iter_samples(autosave=True)):
        gt = load_label_map(s, "ground_truth")
        s["image_labels"] = to_classifications([] if i == 0 else [SYNTH_CLASSES[c] for c in image_level_labels(gt)])
    ds.default_mask_targets = dict(enumerate(SYNTH_CLASSES))
    ds.save()
    try:
        yield ds
    finally:
        if fo.dataset_exists(ds.name):
            fo.delete_dataset(ds.name)


def test_labels_detections_resume_and_a_broken_image(tagged, pipe, tmp_path):
    from sepl.fo.convert import load_label_map, to_classifications
    from sepl.fo.sam3 import sam3_pseudo_labels
    from sepl.labelio import read_image

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    tagged.add_sample(fo.Sample(filepath=str(broken), image_labels=to_classifications(["disc"])))
    s = sam3_pseudo_labels(tagged, "image_labels", config=CFG, pipeline=pipe, batch_size=3)
    assert s["samples"] == 4 and len(s["failed"]) == 1 and "broken.jpg" in s["failed"][0]
    assert s["counts"]["empty_tags"] == 1 and s["counts"]["kept"] > 0
    assert tagged.count("sam3") == 4 and tagged.count("sam3_detections") == 4
    assert {int(k): v for k, v in tagged.mask_targets["sam3"].items()} == dict(enumerate(SYNTH_CLASSES))
    # what is stored is the pipeline's own result, per instance: class, phrase, score, presence
    smp = tagged.skip(1).first()
    tags = [c.label for c in smp.image_labels.classifications]
    direct = pipe(read_image(smp.filepath), tags)
    assert np.array_equal(load_label_map(smp, "sam3"), direct.label)
    dets = smp.sam3_detections.detections
    assert len(dets) == len(direct.masks) > 0
    assert [d.label for d in dets] == [SYNTH_CLASSES[c] for c in direct.class_ids]
    assert [d.phrase for d in dets] == direct.phrases and set(direct.phrases) <= set(tags)
    np.testing.assert_allclose([d.confidence for d in dets], direct.scores, atol=1e-6)
    assert all(0 <= d.presence <= 1 for d in dets)
    assert not load_label_map(tagged.first(), "sam3").any()
    # the rerun resumes: only the broken sample is retried (and fails again)
    again = sam3_pseudo_labels(tagged, "image_labels", config=CFG, pipeline=pipe)
    assert again["resumed"] and again["samples"] == 0 and len(again["failed"]) == 1
    # other parameters: protected unless overwrite; a threshold of 1 keeps nothing
    strict = Sam3Config(**dict(CFG.run_params(), score_threshold=1.0))
    with pytest.raises(SeplError, match="already exists"):
        sam3_pseudo_labels(tagged, "image_labels", config=strict, pipeline=pipe)
    pipe_strict = Sam3Config(**dict(CFG.run_params(), score_threshold=1.0)).build(SYNTH_CLASSES, device="cpu")
    s = sam3_pseudo_labels(tagged, "image_labels", config=strict, pipeline=pipe_strict, overwrite=True)
    assert s["counts"]["no_instance"] == 3 and s["counts"].get("kept", 0) == 0
    assert sum("no instance of" in w for _, w in s["warnings"]) == 3
    with pytest.raises(SeplError, match="has no field 'nope'"):
        sam3_pseudo_labels(tagged, "nope", label_field="x", config=CFG, pipeline=pipe)


def test_a_sample_without_its_tags_field_is_reported(tagged, pipe):
    from sepl.fo.sam3 import sam3_pseudo_labels

    smp = tagged.skip(2).first()
    smp.image_labels = None
    smp.save()
    s = sam3_pseudo_labels(tagged, "image_labels", label_field="t", config=CFG, pipeline=pipe, batch_size=4)
    assert s["samples"] == 3 and len(s["failed"]) == 1 and "image-level labels" in s["failed"][0]


def test_sepl_refines_seeds_with_the_sam3_instances(tagged, pipe):
    from sepl.fo import refine
    from sepl.fo.convert import load_label_map, load_masks
    from sepl.fo.sam3 import sam3_pseudo_labels
    from sepl.merge import merge

    sam3_pseudo_labels(tagged, "image_labels", config=CFG, pipeline=pipe)
    n = refine(tagged, "ground_truth", "sam3_detections", out_field="sepl_sam3", allow_empty=True)
    assert n == len(tagged)
    smp = tagged.skip(1).first()
    masks = load_masks(smp, "sam3_detections")
    seed = load_label_map(smp, "ground_truth")
    assert len(masks) > 0
    want = merge(seed, masks, mode="paper", num_classes=len(SYNTH_CLASSES), allow_empty=True).labels
    assert np.array_equal(load_label_map(smp, "sepl_sam3"), want)


def test_apply_model(tagged, pipe):
    from sepl.fo.sam3 import Sam3PseudoLabelModel

    model = Sam3PseudoLabelModel(pipe, tags_field="image_labels")
    tagged.apply_model(model, label_field="am", batch_size=2)
    s = tagged.skip(1).first()
    assert isinstance(s["am_labels"], fo.Segmentation) and isinstance(s["am_detections"], fo.Detections)
    assert s["am_labels"].mask.shape == (s.metadata.height, s.metadata.width)
    assert len(s["am_detections"].detections) > 0
    assert not tagged.first()["am_labels"].mask.any()


def test_operator_and_cli(tagged, monkeypatch, tmp_path):
    from pathlib import Path

    import fiftyone.operators as foo

    from sepl.cli import main

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "sepl").symlink_to(repo, target_is_directory=True)
    monkeypatch.setenv("FIFTYONE_PLUGINS_DIR", str(tmp_path))
    monkeypatch.setattr(fo.config, "plugins_dir", str(tmp_path))
    tagged.persistent = True  # the CLI loads it by name
    params = dict(tags_field="image_labels", random_weights=True, preset="none", score_threshold=0.2,
                  label_field="op", delegate=False, device="cpu")
    res = foo.execute_operator("@sepl/sepl/sam3_pseudo_labels", ctx=dict(dataset=tagged, params=params))
    res.raise_exceptions()
    assert res.result["processed"] == 4 and res.result["all_background"] >= 1 and res.result["instances_kept"] > 0
    r = res.result
    assert (f"- samples labelled: **4**\n- left all background (no tags or no instance): **{r['all_background']}**"
            f"\n- instances kept: **{r['instances_kept']}**") in r["summary"]
    tagged.reload()
    assert tagged.count("op") == 4 and tagged.has_field("op_detections")
    code = main(["sam3", "--dataset", tagged.name, "--tags-field", "image_labels", "--label-field", "cli",
                 "--random-weights", "--preset", "none", "--score-threshold", "0.2", "--device", "cpu"])
    assert code == 0
    tagged.reload()
    for s in tagged.iter_samples():  # same model, same options: same labels
        np.testing.assert_array_equal(s["op"].mask, s["cli"].mask)
    assert main(["sam3", "--dataset", "no-such-dataset", "--tags-field", "t"]) == 1
    # no model and no --random-weights: a clear error naming the model to download
    assert main(["sam3", "--dataset", tagged.name, "--tags-field", "image_labels", "--label-field", "x"]) == 1
