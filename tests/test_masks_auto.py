"""Automatic masks: same masks as segment-anything's SamAutomaticMaskGenerator, batched."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")

from segment_anything import SamAutomaticMaskGenerator  # noqa: E402

from sepl.errors import SeplError  # noqa: E402
from sepl.masks.base import MaskSet, matched_fraction  # noqa: E402
from sepl.masks.build import build_sam  # noqa: E402
from sepl.masks.sam_auto import SamAutoMasks  # noqa: E402
from sepl.synth import make_scene  # noqa: E402

# A random tiny SAM gives noisy logits of magnitude ~0.1 whose boxes all span the image, so
# the settings keep many masks (NMS at 1.0) and use a small stability offset.
SETTINGS = {
    "all": dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0),
    "filtered": dict(points_per_side=8, pred_iou_thresh=0.01, stability_score_thresh=0.12,
                     stability_score_offset=0.02, box_nms_thresh=1.0),
    "crops_small_regions": dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.1,
                                stability_score_offset=0.02, crop_n_layers=1, box_nms_thresh=1.0,
                                crop_nms_thresh=1.0, min_mask_region_area=30),
    "nms": dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.7),
}


@pytest.fixture(scope="module")
def sam():
    return build_sam("tiny", random_weights=True)


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(1)
    return [make_scene(rng, (150, 200))[0], make_scene(rng, (120, 90))[0]]


def _stock(sam, image, kw):
    return SamAutomaticMaskGenerator(sam, **kw).generate(image)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_same_masks_as_stock_generator(sam, scenes, name):
    kw = SETTINGS[name]
    image = scenes[0]
    ref = _stock(sam, image, kw)
    ours = SamAutoMasks(sam, image_batch=1, points_per_batch=50, **kw).generate(image)
    assert isinstance(ours, MaskSet) and len(ours) == len(ref) > 0
    for k, r in enumerate(ref):  # same masks, same order
        assert np.array_equal(r["segmentation"], ours.masks[k]), k
        assert r["area"] == ours.area[k]
        assert r["predicted_iou"] == pytest.approx(float(ours.predicted_iou[k]), abs=1e-6)
        assert r["stability_score"] == pytest.approx(float(ours.stability_score[k]), abs=1e-6)
        x, y, w, h = r["bbox"]
        assert np.allclose(ours.boxes[k], [x, y, x + w, y + h])
        assert np.allclose(ours.point_coords[k], r["point_coords"][0], atol=1e-3)


def test_batched_images_match_stock(sam, scenes):
    kw = SETTINGS["crops_small_regions"]
    gen = SamAutoMasks(sam, image_batch=8, **kw)
    batch = gen.generate_batch(scenes)
    for image, ours in zip(scenes, batch):
        ref = np.stack([r["segmentation"] for r in _stock(sam, image, kw)])
        assert ours.masks.shape[1:] == image.shape[:2]
        # Batched encoding changes logits in the last float bits; masks stay the same.
        assert matched_fraction(ref, ours.masks, 0.99) >= 0.99


def test_out_of_memory_retries_with_smaller_batches(sam, scenes, monkeypatch, caplog):
    kw = SETTINGS["filtered"]
    expected = SamAutoMasks(sam, image_batch=1, **kw).generate_batch(scenes)
    encoder_forward = sam.image_encoder.forward
    decoder_forward = sam.mask_decoder.forward
    calls = []

    def encoder(x):
        calls.append(len(x))
        if len(x) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return encoder_forward(x)

    def decoder(*a, sparse_prompt_embeddings, **k):
        if len(sparse_prompt_embeddings) > 16:
            raise RuntimeError("CUDA error: out of memory")
        return decoder_forward(*a, sparse_prompt_embeddings=sparse_prompt_embeddings, **k)

    monkeypatch.setattr(sam.image_encoder, "forward", encoder)
    monkeypatch.setattr(sam.mask_decoder, "forward", decoder)
    got = SamAutoMasks(sam, image_batch=4, points_per_batch=64, **kw).generate_batch(scenes)
    assert calls[0] == 2 and set(calls[1:]) == {1}
    retries = [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()]
    # halved once for images, twice for points (64 -> 32 -> 16), then kept for later crops
    assert retries == ["out of memory: retrying with image batch size 1",
                       "out of memory: retrying with point batch size 32",
                       "out of memory: retrying with point batch size 16"]
    for a, b in zip(expected, got):
        assert np.array_equal(a.masks, b.masks)
    monkeypatch.setattr(sam.image_encoder, "forward",
                        lambda x: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("CUDA out of memory")))
    with pytest.raises(SeplError, match="out of memory on a single image batch"):
        SamAutoMasks(sam, **kw).generate(scenes[0])


def test_empty_result_and_bad_image(sam, scenes):
    ms = SamAutoMasks(sam, points_per_side=4, pred_iou_thresh=50.0).generate(scenes[0])
    assert len(ms) == 0 and ms.masks.shape == (0, 150, 200)
    with pytest.raises(SeplError, match="uint8"):
        SamAutoMasks(sam).generate(np.zeros((10, 10, 3), np.float32))
