"""SAM builders, checkpoints and box-prompted masks, against segment-anything's own predictor."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")

from segment_anything import SamPredictor  # noqa: E402

from sepl.errors import SeplError  # noqa: E402
from sepl.masks import checkpoints  # noqa: E402
from sepl.masks.build import build_sam  # noqa: E402
from sepl.masks.sam_box import BoxPromptedSAM  # noqa: E402


@pytest.fixture(scope="module")
def tiny_sam():
    return build_sam("tiny", random_weights=True)


@pytest.fixture
def image(rng):
    return (rng.random((90, 120, 3)) * 255).astype(np.uint8)


def test_tiny_is_deterministic_and_checkpoint_round_trip(tmp_path, tiny_sam):
    other = build_sam("tiny", seed=1, random_weights=True)
    path = tmp_path / "tiny.pth"
    torch.save(other.state_dict(), path)
    loaded = build_sam("tiny", checkpoint=str(path))
    for (k, a), b in zip(other.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.equal(build_sam("tiny", random_weights=True).state_dict()["mask_decoder.iou_token.weight"],
                       tiny_sam.state_dict()["mask_decoder.iou_token.weight"])
    assert not torch.equal(other.state_dict()["mask_decoder.iou_token.weight"],
                           tiny_sam.state_dict()["mask_decoder.iou_token.weight"])


def test_corrupt_and_wrong_type_checkpoints(tmp_path, tiny_sam):
    bad = tmp_path / "sam_vit_b_01ec64.pth"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SeplError, match="cannot read SAM checkpoint.*corrupt"):
        build_sam("tiny", checkpoint=str(bad))
    good = tmp_path / "tiny.pth"
    torch.save(tiny_sam.state_dict(), good)
    # A tiny checkpoint offered to vit_b is recognised as tiny, without building vit_b's weights twice.
    from sepl.masks.build import SAM_CONFIGS, sam_from_config
    from sepl.masks.checkpoints import load_state_dict

    vit_b = sam_from_config(SAM_CONFIGS["vit_b"])
    with pytest.raises(SeplError, match="is a tiny checkpoint, but model type vit_b"):
        load_state_dict(vit_b, str(good), "vit_b")
    partial = tmp_path / "partial.pth"
    sd = tiny_sam.state_dict()
    sd.pop("mask_decoder.iou_token.weight")
    torch.save(sd, partial)
    with pytest.raises(SeplError, match="lacks 1 weights"):
        build_sam("tiny", checkpoint=str(partial))
    with pytest.raises(SeplError, match="unknown SAM model type"):
        build_sam("vit_x")


def test_resolve_checkpoint_order_and_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SEPL_SAM_DIR", str(tmp_path / "dir"))
    monkeypatch.delenv("SEPL_SAM_CHECKPOINT", raising=False)
    monkeypatch.setattr(checkpoints.Path, "home", lambda: tmp_path / "home")
    with pytest.raises(SeplError) as e:
        checkpoints.resolve_checkpoint("vit_b")
    msg = str(e.value)
    assert "sam_vit_b_01ec64.pth" in msg and "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in msg
    assert str(tmp_path / "dir") in msg and "SEPL_SAM_CHECKPOINT" in msg
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    assert checkpoints.resolve_checkpoint("vit_b") == str(tmp_path / "dir" / "sam_vit_b_01ec64.pth")
    env = tmp_path / "env.pth"
    env.write_bytes(b"y")
    monkeypatch.setenv("SEPL_SAM_CHECKPOINT", str(env))
    assert checkpoints.resolve_checkpoint("vit_b") == str(env)
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"z")
    assert checkpoints.resolve_checkpoint("vit_b", str(explicit)) == str(explicit)
    with pytest.raises(SeplError, match="does not exist"):
        checkpoints.resolve_checkpoint("vit_b", str(tmp_path / "nope.pth"))
    monkeypatch.delenv("SEPL_SAM_CHECKPOINT")
    assert checkpoints.resolve_checkpoint("tiny") is None


def test_download_verifies_checksum(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"weights" * 100)
    url = src.as_uri()
    good = checkpoints.md5sum(str(src))
    dest = checkpoints.download(url, tmp_path / "out" / "w.pth", md5=good, size_bytes=700)
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(SeplError, match="fails its checksum"):
        checkpoints.download(url, tmp_path / "out" / "bad.pth", md5="0" * 32)
    assert not (tmp_path / "out" / "bad.pth").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["w.pth"]  # no .part leftovers
    with pytest.raises(SeplError, match="cannot download"):
        checkpoints.download((tmp_path / "missing").as_uri(), tmp_path / "out" / "m.pth")


@pytest.mark.parametrize("multimask", [False, True])
def test_box_prompts_match_sam_predictor(tiny_sam, image, multimask):
    boxes = np.array([[10, 10, 60, 50], [0, 0, 119, 89], [30.5, 20, 31, 80]], np.float32)
    masks, scores = BoxPromptedSAM(tiny_sam, multimask=multimask).predict(image, boxes)
    assert masks.shape == (3, 90, 120) and masks.dtype == bool
    assert scores.shape == (3,) and scores.dtype == np.float32
    pred = SamPredictor(tiny_sam)
    pred.set_image(image)
    # the predictor decoding the same batch of boxes runs the same arithmetic: identical masks
    tb = pred.transform.apply_boxes_torch(torch.as_tensor(boxes), image.shape[:2])
    m, s, _ = pred.predict_torch(None, None, boxes=tb, multimask_output=multimask)
    j = s.argmax(1)
    idx = torch.arange(len(boxes))
    assert np.array_equal(m[idx, j].numpy(), masks)
    np.testing.assert_allclose(scores, s[idx, j].numpy(), rtol=0, atol=1e-6)
    # one box at a time decodes in other float kernels: the same masks up to float rounding
    for k, b in enumerate(boxes):
        m1, s1, _ = pred.predict(box=b, multimask_output=multimask)
        j1 = int(np.argmax(s1))
        assert (m1[j1] != masks[k]).mean() < 0.01
        assert scores[k] == pytest.approx(s1[j1], abs=1e-4)


def test_box_prompts_edge_cases(tiny_sam, image):
    bp = BoxPromptedSAM(tiny_sam, box_batch=2, image_batch=1)
    masks, scores = bp.predict(image, np.zeros((0, 4)))
    assert masks.shape == (0, 90, 120) and scores.shape == (0,)
    # Several images and prompt chunks: each image's masks are its own (encoded one at a
    # time, the arithmetic is the single-image one, so they are identical).
    boxes = np.array([[0, 0, 50, 50], [20, 30, 100, 80], [5, 5, 6, 6]], np.float32)
    flipped = np.ascontiguousarray(image[::-1])
    both = bp.predict_batch([image, flipped, image], [boxes, boxes[:1], []])
    assert np.array_equal(both[0][0], bp.predict(image, boxes)[0])
    assert np.array_equal(both[1][0], bp.predict(flipped, boxes[:1])[0])
    assert both[2][0].shape == (0, 90, 120)
    # encoded together, the images' features round differently: same masks up to that
    together = BoxPromptedSAM(tiny_sam, box_batch=2, image_batch=4).predict_batch([image, flipped], [boxes, boxes[:1]])
    for (a, _), (b, _) in zip(together, both):
        assert a.shape == b.shape and (a != b).mean() < 0.01
    with pytest.raises(SeplError, match="XYXY"):
        bp.predict(image, [[50, 50, 10, 10]])
    with pytest.raises(SeplError, match="uint8"):
        bp.predict(image.astype(np.float32), boxes)
