"""SAM 3 pseudo-labels with transformers' Sam3Model (tiny, random weights, a CLIP BPE tokenizer
built offline): post-processing against Sam3Processor's, the cached/batched passes against the
model's own forward, prompts mapped to classes, thresholds, painting, loading errors."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from sepl.classes import VOC_CLASSES  # noqa: E402
from sepl.errors import SeplError  # noqa: E402
from sepl.grounded.labelmap import paint_label_map  # noqa: E402
from sepl.masks import hf_models  # noqa: E402
from sepl.sam3 import Sam3Config, Sam3PseudoLabels, select_instances  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return hf_models.build_tiny("sam3")


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), rng.integers(0, 255, (45, 38, 3), dtype=np.uint8)]


def _forward(model, proc, image, phrase):
    enc = proc(images=[image], text=[phrase], return_tensors="pt")
    with torch.no_grad():
        return model(**{k: v for k, v in enc.items() if k != "original_sizes"})


def test_tokenizer_is_a_real_clip_bpe(tiny):
    _, proc = tiny
    tok = proc.tokenizer
    ids = tok(["horse", "dining table", "quokka"])["input_ids"]
    assert tok.convert_ids_to_tokens(ids[0]) == ["<|startoftext|>", "horse</w>", "<|endoftext|>"]
    assert tok.convert_ids_to_tokens(ids[1])[1:3] == ["dining</w>", "table</w>"]
    assert len(ids[2]) > 3  # an unknown word falls back to bytes, as CLIP's BPE does


def test_postprocess_equals_sam3_processor(tiny, images):
    model, proc = tiny
    for im in images:
        out = _forward(model, proc, im, "cat")
        scores = (out.pred_logits.sigmoid() * out.presence_logits.sigmoid())[0]
        threshold = float(scores.median())  # about half the queries kept
        theirs = proc.post_process_instance_segmentation(out, threshold=threshold, mask_threshold=0.5,
                                                         target_sizes=[im.shape[:2]])[0]
        ours = select_instances(out.pred_logits[0], out.presence_logits[0], out.pred_masks[0], out.pred_boxes[0],
                                im.shape[:2], score_threshold=threshold, mask_threshold=0.5)
        nonempty = theirs["masks"].flatten(1).any(1)  # sepl also drops empty masks
        assert 0 < len(ours.masks) == int(nonempty.sum())
        assert np.array_equal(ours.masks, theirs["masks"][nonempty].bool().numpy())
        np.testing.assert_array_equal(ours.scores, theirs["scores"][nonempty].numpy())
        np.testing.assert_array_equal(ours.boxes, theirs["boxes"][nonempty].numpy())
        assert ours.counts["kept"] + ours.counts["below_score_threshold"] + ours.counts["empty_mask"] == 12


def test_presence_threshold_drops_an_absent_concept(tiny, images):
    model, proc = tiny
    out = _forward(model, proc, images[0], "dog")
    presence = float(out.presence_logits.sigmoid()[0, 0])
    args = (out.pred_logits[0], out.presence_logits[0], out.pred_masks[0], out.pred_boxes[0], images[0].shape[:2])
    gone = select_instances(*args, score_threshold=0.0, presence_threshold=min(1.0, presence + 1e-3))
    assert len(gone.masks) == 0 and gone.counts["absent"] == 1 and gone.presence == pytest.approx(presence)
    kept = select_instances(*args, score_threshold=0.0, presence_threshold=presence - 1e-3)
    assert len(kept.masks) > 0 and "absent" not in kept.counts


def test_cached_batched_passes_equal_the_models_forward(tiny, images):
    model, proc = tiny
    pipe = Sam3PseudoLabels(model, proc, VOC_CLASSES, preset="voc", score_threshold=0.2, rule="reference",
                            prompt_batch=3)
    tags = [["horse", "person"], ["tvmonitor"]]
    results = pipe.predict_batch(images, tags, ["a", "b"])
    assert results[0].prompt.phrases == ["horse", "halter", "saddle", "person"]
    assert results[1].prompt.phrases == ["tvmonitor", "tv", "monitor"]
    for im, r in zip(images, results):
        want_masks, want_scores, want_classes, want_phrases = [], [], [], []
        for phrase, cls in zip(r.prompt.phrases, r.prompt.classes):
            out = _forward(model, proc, im, phrase)
            inst = select_instances(out.pred_logits[0], out.presence_logits[0], out.pred_masks[0],
                                    out.pred_boxes[0], im.shape[:2], score_threshold=0.2)
            want_masks.append(inst.masks)
            want_scores.append(inst.scores)
            want_classes += [cls] * len(inst.scores)
            want_phrases += [phrase] * len(inst.scores)
        want = np.concatenate(want_masks)
        assert len(r.masks) == len(want) > 0
        assert r.phrases == want_phrases and r.class_ids.tolist() == want_classes
        np.testing.assert_allclose(r.scores, np.concatenate(want_scores), atol=1e-4)
        # masks may differ where a batched float op rounds the other way: nearly all pixels agree
        assert (r.masks == want).mean() > 0.999
        # sub-prompts paint their parent class
        assert set(np.unique(r.label)) <= {0} | set(r.class_ids.tolist())
        assert np.array_equal(r.label, paint_label_map(r.masks, r.class_ids, r.scores, shape=im.shape[:2],
                                                       rule="reference"))


@pytest.mark.parametrize("rule", ["area", "score"])
def test_painting_rules_and_ignore_band(tiny, images, rule):
    model, proc = tiny
    pipe = Sam3PseudoLabels(model, proc, VOC_CLASSES, score_threshold=0.2, rule=rule, ignore_conflicts=True)
    r = pipe(images[0], ["cat", "dog"])
    assert set(r.class_ids.tolist()) == {8, 12}
    assert np.array_equal(r.label, paint_label_map(r.masks, r.class_ids, r.scores, shape=images[0].shape[:2],
                                                   rule=rule, ignore_conflicts=True))
    assert (r.label == 255).any()  # random masks overlap: the two classes' overlap is ignored


def test_empty_tags_no_instance_and_bad_inputs(tiny, images):
    model, proc = tiny
    pipe = Sam3PseudoLabels(model, proc, VOC_CLASSES, score_threshold=1.0)
    empty, none = pipe.predict_batch(images, [[], ["cat"]])
    assert empty.counts == {"empty_tags": 1} and not empty.label.any() and "no image-level labels" in empty.warnings[0]
    assert none.counts["no_instance"] == 1 and none.counts["kept"] == 0 and not none.label.any()
    assert "no instance of ['cat'] above score 1.0" in none.warnings[0] and none.masks.shape == (0, 45, 38)
    with pytest.raises(SeplError, match="sample s1: image label 'zebra' is not one of"):
        pipe.predict_batch(images, [["cat"], ["zebra"]], ["s0", "s1"])
    with pytest.raises(SeplError, match="sample s0: image must be an"):
        pipe.predict_batch([np.zeros((4, 4), np.float32)], [["cat"]], ["s0"])
    with pytest.raises(SeplError, match="score_threshold must lie in"):
        Sam3PseudoLabels(model, proc, VOC_CLASSES, score_threshold=2.0)
    with pytest.raises(SeplError, match="need a Sam3Model"):
        Sam3PseudoLabels(hf_models.build_tiny("sam2")[0], proc, VOC_CLASSES)


def test_loading(tmp_path, images):
    with pytest.raises(SeplError, match="no SAM 3 model given.*facebook/sam3"):
        Sam3Config().build(VOC_CLASSES, device="cpu")
    with pytest.raises(SeplError, match="from the Hugging Face hub"):
        Sam3Config(model="facebook/sam3").build(VOC_CLASSES, device="cpu")
    sam2 = hf_models.write_tiny("sam2", tmp_path / "sam2")
    with pytest.raises(SeplError, match="is a 'sam2' model, but SAM 3 was asked for.*sam2 loader"):
        Sam3Config(model=str(sam2)).build(VOC_CLASSES, device="cpu")
    folder = hf_models.write_tiny("sam3", tmp_path / "sam3")
    saved = Sam3Config(model=str(folder), score_threshold=0.2).build(VOC_CLASSES, device="cpu")
    fresh = Sam3Config(random_weights=True, score_threshold=0.2).build(VOC_CLASSES, device="cpu")
    a, b = saved(images[0], ["cat"]), fresh(images[0], ["cat"])
    assert len(a.masks) == len(b.masks) > 0
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    assert Sam3Config(model=str(folder)).run_params()["model"] == "sam3"
    (folder / "tokenizer.json").unlink()
    with pytest.raises(SeplError, match="processor"):
        Sam3Config(model=str(folder)).build(VOC_CLASSES, device="cpu")


def test_bfloat16_autocast_runs_and_stays_close(tiny, images):
    model, proc = tiny
    a = Sam3PseudoLabels(model, proc, VOC_CLASSES, score_threshold=0.0)(images[0], ["cat"])
    b = Sam3PseudoLabels(model, proc, VOC_CLASSES, score_threshold=0.0, dtype="bfloat16")(images[0], ["cat"])
    assert len(a.masks) == len(b.masks) == 12 and b.scores.dtype == np.float32
    np.testing.assert_allclose(a.scores, b.scores, atol=0.02)
