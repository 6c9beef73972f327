"""Both Grounding DINO backends with tiny random-weight configurations, offline."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sepl.classes import VOC_CLASSES  # noqa: E402
from sepl.errors import SeplError  # noqa: E402
from sepl.grounded.detectors import (GroundingDinoPy, HFGroundingDino, build_detector,  # noqa: E402
                                     select_detections)
from sepl.grounded.prompts import VOC_SUBPROMPTS, build_prompt  # noqa: E402
from sepl.grounded.tiny import (GDINO_TINY_OVERRIDES, write_tiny_hf_grounding_dino,  # noqa: E402
                                write_tiny_text_encoder)

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory):
    return write_tiny_text_encoder(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return write_tiny_hf_grounding_dino(tmp_path_factory.mktemp("hf_gdino"))


@pytest.fixture(scope="module")
def gdino(text_encoder):
    pytest.importorskip("groundingdino")
    return GroundingDinoPy("SwinT_OGC", None, text_encoder, size=96, max_size=160, overrides=GDINO_TINY_OVERRIDES)


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), rng.integers(0, 255, (90, 70, 3), dtype=np.uint8)]


def _check(raws, images, prompts, queries):
    assert len(raws) == len(images)
    for raw, im, p in zip(raws, images, prompts):
        h, w = im.shape[:2]
        assert raw.boxes.shape == (queries, 4) and raw.boxes.dtype == np.float32
        assert (raw.boxes[:, 0] >= 0).all() and (raw.boxes[:, 2] <= w).all() and (raw.boxes[:, 3] <= h).all()
        assert (raw.boxes[:, 2] >= raw.boxes[:, 0]).all()
        t = raw.token_scores.shape[1]
        assert raw.token_scores.shape == (queries, t) and len(raw.token_phrase) == t
        assert ((raw.token_scores >= 0) & (raw.token_scores <= 1)).all()
        assert sorted(set(raw.token_phrase.tolist()) - {-1}) == list(range(len(p.phrases)))
        d = select_detections(raw, p, box_threshold=0.3)
        assert d.counts["queries"] == queries
        assert d.counts["kept"] + d.counts["below_box_threshold"] + d.counts["unmatched_phrase"] == queries
        assert set(d.class_ids.tolist()) <= set(p.classes)


def test_groundingdino_py_backend_batch(gdino, images):
    prompts = [build_prompt(["horse", "person"], VOC_CLASSES, VOC_SUBPROMPTS), build_prompt(["cat"], VOC_CLASSES)]
    raws = gdino.detect(images, prompts)
    _check(raws, images, prompts, GDINO_TINY_OVERRIDES["num_queries"])
    # each answer equals the single-image one (groundingdino-py mixes the captions of a
    # batch, so the backend batches only identical captions and sizes)
    for im, p, raw in zip(images, prompts, raws):
        alone = gdino(im, p)
        np.testing.assert_allclose(alone.token_scores, raw.token_scores, atol=1e-4)
        np.testing.assert_allclose(alone.boxes, raw.boxes, atol=1e-2)
    same = gdino.detect([images[0], images[0]], [prompts[0], prompts[0]])
    np.testing.assert_allclose(same[1].token_scores, raws[0].token_scores, atol=1e-4)


def test_transformers_backend_batch(hf_folder, images):
    det = build_detector("transformers", model=str(hf_folder))
    prompts = [build_prompt(["diningtable", "bottle"], VOC_CLASSES, VOC_SUBPROMPTS), build_prompt(["dog"], VOC_CLASSES)]
    raws = det.detect(images, prompts)
    _check(raws, images, prompts, 20)
    for im, p, raw in zip(images, prompts, raws):
        np.testing.assert_allclose(det(im, p).token_scores, raw.token_scores, atol=1e-4)
    # transformers' implementation keeps different captions of one batch apart
    mixed = det.detect([images[0], images[0]], prompts)
    for p, raw in zip(prompts, mixed):
        np.testing.assert_allclose(det(images[0], p).token_scores, raw.token_scores, atol=1e-4)
    # the special-token ids the model uses are this tokenizer's, not bert-base-uncased's
    tok = det.tokenizer
    assert det.model.model.special_tokens.tolist() == tok.convert_tokens_to_ids(["[CLS]", "[SEP]", ".", "?"])


def test_bert_shim_matches_transformers_bert(text_encoder):
    """The transformers-5 replacement of groundingdino's BertModelWarper computes what
    BertModel computes (plain 2-D mask) and honours a (B, T, T) phrase mask."""
    import torch
    from transformers import BertModel

    from sepl.grounded.detectors import _make_bert_text

    bert = BertModel.from_pretrained(str(text_encoder)).eval()
    shim = _make_bert_text()(bert_model=bert)
    ids = torch.tensor([[2, 9, 5, 10, 5, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        ref = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        out = shim(input_ids=ids, attention_mask=mask)["last_hidden_state"]
        torch.testing.assert_close(out[:, :6], ref[:, :6])
        # a block-diagonal mask isolates the phrases: changing token 3 leaves token 1 alone
        block = torch.zeros(1, 8, 8)
        block[0, :3, :3] = 1
        block[0, 3:, 3:] = 1
        ids2 = ids.clone()
        ids2[0, 3] = 11
        a = shim(input_ids=ids, attention_mask=block)["last_hidden_state"]
        b = shim(input_ids=ids2, attention_mask=block)["last_hidden_state"]
        torch.testing.assert_close(a[:, :3], b[:, :3])
        assert not torch.allclose(a[:, 3:6], b[:, 3:6])


def test_missing_text_encoder_and_checkpoint_name_the_file(tmp_path, text_encoder):
    with pytest.raises(SeplError, match=r"text-encoder folder .*nowhere does not exist.*bert-base-uncased"):
        GroundingDinoPy("SwinT_OGC", None, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SeplError, match="has no config.json"):
        GroundingDinoPy("SwinT_OGC", None, tmp_path / "empty")
    with pytest.raises(SeplError, match="no text-encoder folder given"):
        GroundingDinoPy("SwinT_OGC", None, None)
    ck = tmp_path / "weights" / "groundingdino_swint_ogc.pth"
    with pytest.raises(SeplError, match=r"checkpoint .*groundingdino_swint_ogc.pth not found.*download "
                                        r"groundingdino_swint_ogc.pth from https://github.com/IDEA-Research"):
        GroundingDinoPy("SwinT_OGC", str(ck), text_encoder)
    with pytest.raises(SeplError, match="config .* not found"):
        GroundingDinoPy(str(tmp_path / "mine.py"), None, text_encoder)


def test_missing_hf_folder_names_what_to_save(tmp_path):
    with pytest.raises(SeplError, match=r"folder .*gd does not exist.*save_pretrained"):
        HFGroundingDino(tmp_path / "gd")
    (tmp_path / "gd").mkdir()
    (tmp_path / "gd" / "config.json").write_text("{}")
    with pytest.raises(SeplError, match="has no tokenizer"):
        HFGroundingDino(tmp_path / "gd")
    with pytest.raises(SeplError, match="unknown detector backend"):
        build_detector("yolo")


def test_checkpoint_round_trip_and_mismatch(tmp_path, gdino, text_encoder, images):
    """A saved state dict loads back exactly; one of another architecture is refused."""
    import torch

    path = tmp_path / "tiny.pth"
    torch.save({"model": {"module." + k: v for k, v in gdino.model.state_dict().items()}}, path)
    other = GroundingDinoPy("SwinT_OGC", str(path), text_encoder, size=96, max_size=160,
                            overrides=dict(GDINO_TINY_OVERRIDES))
    p = build_prompt(["cat"], VOC_CLASSES)
    np.testing.assert_allclose(other(images[0], p).token_scores, gdino(images[0], p).token_scores, atol=1e-5)
    bigger = dict(GDINO_TINY_OVERRIDES, dec_layers=2)
    with pytest.raises(SeplError, match="lacks .* weights of config"):
        GroundingDinoPy("SwinT_OGC", str(path), text_encoder, overrides=bigger)


def test_caption_longer_than_the_text_limit_is_refused(gdino, images):
    from sepl.classes import COCO_CLASSES
    from sepl.grounded.prompts import build_prompt as bp

    many = {"person": [f"person{i}" for i in range(300)]}
    p = bp(["person"], ["background"] + COCO_CLASSES, many)
    with pytest.raises(SeplError, match="more than the detector's 256"):
        gdino(images[0], p)
