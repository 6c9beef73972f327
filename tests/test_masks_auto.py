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


# Settings with both NMS stages active, for a tiny SAM whose masks follow image content
# (``varied_sam``): within a crop the box NMS removes most of the duplicates, between crops
# the crop NMS removes more, and several local masks from several crops remain.
NMS_SETTINGS = {
    "nms_crops": dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.01,
                      stability_score_offset=0.005, box_nms_thresh=0.7, crop_n_layers=1, crop_nms_thresh=0.5),
    "nms_crops_small_regions": dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.01,
                                    stability_score_offset=0.005, box_nms_thresh=0.7, crop_n_layers=1,
                                    crop_nms_thresh=0.5, min_mask_region_area=400),
}
POINTS_PER_BATCH = 64  # the stock generator's default: both decode the same prompt batches


@pytest.fixture(scope="module")
def varied_sam():
    """A tiny random SAM whose two transposed convolutions have the same weights at the four
    kernel positions: random 2x2 kernels stamp a periodic pattern over the whole mask (every
    box spans the image), flat ones let the masks follow the image's regions."""
    model = build_sam("tiny", seed=0, random_weights=True)
    with torch.no_grad():
        for m in model.mask_decoder.output_upscaling:
            if isinstance(m, torch.nn.ConvTranspose2d):
                m.weight.copy_(m.weight.mean((2, 3), keepdim=True).expand_as(m.weight))
    return model


def _blobs(h: int, w: int, seed: int) -> np.ndarray:
    """Four discs of random colours, one per quadrant, on a flat background."""
    import cv2

    r = np.random.default_rng(seed)
    im = np.full((h, w, 3), 110, np.uint8)
    for cy, cx in [(0.25, 0.25), (0.3, 0.75), (0.75, 0.3), (0.7, 0.7)]:
        colour = tuple(int(c) for c in r.integers(0, 255, 3))
        rad = int(r.integers(8, 16))
        cv2.circle(im, (int(cx * w + r.integers(-5, 5)), int(cy * h + r.integers(-5, 5))), rad, colour, -1)
    return im


@pytest.fixture(scope="module")
def blob_images():
    return [_blobs(120, 160, 1), _blobs(100, 90, 3)]


def _stock(sam, image, kw):
    return SamAutomaticMaskGenerator(sam, points_per_batch=POINTS_PER_BATCH, **kw).generate(image)


def _assert_same(ref, ours):
    """Same masks, same order, same per-mask numbers as the stock generator."""
    assert isinstance(ours, MaskSet) and len(ours) == len(ref) > 0
    for k, r in enumerate(ref):
        assert np.array_equal(r["segmentation"], ours.masks[k]), k
        assert r["area"] == ours.area[k]
        assert r["predicted_iou"] == pytest.approx(float(ours.predicted_iou[k]), abs=1e-6)
        assert r["stability_score"] == pytest.approx(float(ours.stability_score[k]), abs=1e-6)
        x, y, w, h = r["bbox"]
        assert np.allclose(ours.boxes[k], [x, y, x + w, y + h])
        assert np.allclose(ours.point_coords[k], r["point_coords"][0], atol=1e-3)
        x, y, w, h = r["crop_box"]
        assert np.allclose(ours.crop_boxes[k], [x, y, x + w, y + h])


@pytest.mark.parametrize("name", list(SETTINGS))
def test_same_masks_as_stock_generator(sam, scenes, name):
    kw = SETTINGS[name]
    image = scenes[0]
    ours = SamAutoMasks(sam, image_batch=1, points_per_batch=POINTS_PER_BATCH, **kw).generate(image)
    _assert_same(_stock(sam, image, kw), ours)


@pytest.mark.parametrize("name", list(NMS_SETTINGS))
def test_same_masks_as_stock_generator_with_nms_and_crops(varied_sam, blob_images, name):
    """image_batch=1 runs the stock generator's arithmetic in its order: identical output,
    with the box NMS, the crop NMS (and the small-region clean-up) all changing the result."""
    kw = NMS_SETTINGS[name]
    image = blob_images[0]
    hw = image.shape[0] * image.shape[1]
    ref = _stock(varied_sam, image, kw)
    ours = SamAutoMasks(varied_sam, image_batch=1, points_per_batch=POINTS_PER_BATCH, **kw).generate(image)
    _assert_same(ref, ours)
    # the masks are local, varied and come from several crops
    assert len(ours) >= 5 and len({tuple(b) for b in ours.crop_boxes.tolist()}) >= 2
    box_area = (ours.boxes[:, 2] - ours.boxes[:, 0] + 1) * (ours.boxes[:, 3] - ours.boxes[:, 1] + 1)
    assert (box_area < 0.8 * hw).all() and (box_area < 0.2 * hw).sum() >= 4 and (ours.area > 0.005 * hw).all()
    # each NMS stage removes masks here (the crop NMS runs over all crops' masks, so it also
    # removes in-crop duplicates: the box NMS shows when the crop NMS is off)
    def count(**change):
        return len(SamAutoMasks(varied_sam, image_batch=1, **dict(kw, **change)).generate(image))

    if not kw.get("min_mask_region_area"):
        no_crop_nms = count(crop_nms_thresh=1.0)
        assert count(crop_nms_thresh=1.0, box_nms_thresh=1.0) >= 3 * no_crop_nms and no_crop_nms > len(ours)
    else:  # the clean-up changed masks
        plain = SamAutoMasks(varied_sam, image_batch=1, **dict(kw, min_mask_region_area=0)).generate(image)
        assert len(plain) != len(ours) or any(not np.array_equal(a, b) for a, b in zip(plain.masks, ours.masks))


def test_batched_images_agree_with_stock_up_to_float_rounding(varied_sam, blob_images):
    """Images (and crops) encoded together go through other float kernels than one at a time
    (batched matrix products round differently, by ~1e-6 on some CPUs), so masks from batched
    encoding are not bit-identical: the same number of masks, each with a stock mask of
    IoU >= 0.99."""
    from sepl.masks.base import mask_iou_matrix

    kw = NMS_SETTINGS["nms_crops"]
    batch = SamAutoMasks(varied_sam, image_batch=8, points_per_batch=POINTS_PER_BATCH, **kw).generate_batch(blob_images)
    for image, ours in zip(blob_images, batch):
        ref = np.stack([r["segmentation"] for r in _stock(varied_sam, image, kw)])
        assert ours.masks.shape[1:] == image.shape[:2]
        assert len(ours) == len(ref) >= 3
        assert (mask_iou_matrix(ref, ours.masks).max(1) >= 0.99).all()
        assert matched_fraction(ref, ours.masks, 0.99) == 1.0


def test_out_of_memory_retries_with_smaller_batches(sam, scenes, monkeypatch, caplog):
    kw = SETTINGS["filtered"]
    # the batch sizes the retries end at, so the same arithmetic runs: the result is identical
    expected = SamAutoMasks(sam, image_batch=1, points_per_batch=16, **kw).generate_batch(scenes)
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


def _reference_cleanup(mask: np.ndarray, area: int):
    """segment-anything's clean-up of one mask, as ``postprocess_small_regions`` runs it."""
    from segment_anything.utils.amg import remove_small_regions

    m, holes = remove_small_regions(mask, area, mode="holes")
    m, islands = remove_small_regions(m, area, mode="islands")
    return m, holes or islands


def _random_mask(rng, h: int, w: int, kind=None) -> np.ndarray:
    kind = rng.integers(4) if kind is None else kind
    if kind == 0:  # speckle: many islands and holes
        return rng.random((h, w)) < rng.uniform(0.05, 0.7)
    m = np.zeros((h, w), bool)
    side = int(rng.integers(1, 3)) if kind == 3 else None
    for _ in range(rng.integers(1, 7)):
        s = side or int(rng.integers(1, 5))
        y, x = rng.integers(0, max(1, h - s + 1)), rng.integers(0, max(1, w - s + 1))
        m[y:y + s, x:x + s] = True  # kind 3: equal squares, so the largest islands often tie
    return ~m if kind == 2 else m


def _raster_first_differs(mask: np.ndarray, area: int) -> bool:
    """Whether keeping the tied largest island met first in raster order (what labelling
    with scipy did) would keep another island than segment-anything."""
    import cv2

    from segment_anything.utils.amg import remove_small_regions

    filled, _ = remove_small_regions(mask, area, mode="holes")
    n, lab, stats, _ = cv2.connectedComponentsWithStats(filled.astype(np.uint8), 8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    if n < 3 or sizes.max() >= area or (sizes == sizes.max()).sum() < 2:
        return False
    tied = np.flatnonzero(sizes == sizes.max()) + 1
    first = lab.ravel()[np.isin(lab.ravel(), tied)][0]
    return int(first) != int(tied[0])


def test_small_region_cleanup_matches_segment_anything():
    """Every mask equals segment-anything's ``remove_small_regions`` (holes, then islands),
    with the same changed flag, on 320 random masks, including islands that tie for largest
    (where the island kept depends on cv2's numbering)."""
    from sepl.masks.sam_auto import clean_small_regions

    rng = np.random.default_rng(0)
    cases = raster_differs = 0
    for rep in range(40):
        h = int(rng.integers(2, 6)) if rep % 3 == 0 else int(rng.integers(5, 50))
        w = int(rng.integers(3, 50))
        # short masks of equal islands: ties where block order and raster order disagree
        stack = np.stack([_random_mask(rng, h, w, 3 if rep % 3 == 0 else None) for _ in range(8)])
        area = int(rng.integers(2, 12)) if rep % 3 else 5
        got, changed = clean_small_regions(stack, area)
        assert got.shape == stack.shape and got.dtype == bool and changed.shape == (8,)
        for k in range(8):
            ref, ref_changed = _reference_cleanup(stack[k], area)
            assert np.array_equal(got[k], ref), (rep, k)
            assert changed[k] == ref_changed, (rep, k)
            raster_differs += _raster_first_differs(stack[k], area)
            cases += 1
    assert cases == 320 and raster_differs >= 5  # the ties that scipy's numbering broke wrongly
    # one by hand: islands (0, 3) and (1, 0) tie; cv2 scans 2x2 blocks, so it numbers (1, 0) first
    m = np.zeros((4, 6), bool)
    m[0, 3] = m[1, 0] = True
    got, changed = clean_small_regions(m[None], 2)
    expected = np.zeros_like(m)
    expected[1, 0] = True
    assert np.array_equal(got[0], expected) and changed[0]
    assert np.array_equal(_reference_cleanup(m, 2)[0], expected)
    # nothing to do: the masks and flags come back unchanged
    got, changed = clean_small_regions(np.zeros((2, 5, 5), bool), 3)
    assert not got.any() and not changed.any()


def test_postprocess_small_regions_matches_stock():
    """The clean-up + NMS equals ``SamAutomaticMaskGenerator.postprocess_small_regions``:
    same masks kept, same order, boxes recomputed only for changed masks."""
    from segment_anything.utils.amg import MaskData, batched_mask_to_box, mask_to_rle_pytorch, rle_to_mask

    from sepl.masks.sam_auto import remove_small_regions_batched

    rng = np.random.default_rng(3)
    base = np.stack([_random_mask(rng, 30, 40) for _ in range(12)])
    masks = np.concatenate([base, base[:6]])  # duplicates, for the NMS to remove
    masks[12:, 0, 0] ^= True  # ... differing by a pixel that the clean-up may remove
    tm = torch.as_tensor(masks)
    boxes = batched_mask_to_box(tm).float()
    data = MaskData(rles=mask_to_rle_pytorch(tm), boxes=boxes.clone(), iou_preds=torch.arange(len(masks)).float())
    SamAutomaticMaskGenerator.postprocess_small_regions(data, 6, 0.7)
    ours = remove_small_regions_batched(
        dict(masks=masks, boxes=boxes.numpy(), iou_preds=np.arange(len(masks), dtype=np.float32)), 6, 0.7)
    ref_masks = np.stack([rle_to_mask(r) for r in data["rles"]])
    assert 0 < len(ref_masks) < len(masks)
    assert np.array_equal(ours["masks"], ref_masks)
    assert np.array_equal(ours["iou_preds"], data["iou_preds"].numpy())
    assert np.allclose(ours["boxes"], data["boxes"].numpy())
