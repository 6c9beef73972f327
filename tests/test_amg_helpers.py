"""sepl.masks.amg's helpers compute what segment-anything's ``utils.amg`` functions of the
same purpose compute, value for value and dtype for dtype (SAM 1 and SAM 2 / SAM-HQ run on
them; the pipelines are compared with the stock generator in test_masks_auto / test_sam2_auto)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
amg = pytest.importorskip("segment_anything.utils.amg")

from sepl.masks import amg as ours  # noqa: E402


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize("seed", range(12))
def test_box_mask_and_stability_helpers_equal_segment_anything(seed):
    rng = np.random.default_rng(seed)
    n, h, w = int(rng.integers(0, 6)), int(rng.integers(1, 70)), int(rng.integers(1, 90))
    logits = torch.as_tensor(rng.normal(0, 2, (n, h, w)).astype(np.float32))
    masks = logits > float(rng.normal(0, 1))
    if n:
        masks[0] = False  # an empty mask: zero box
    _same(ours.mask_boxes(masks), amg.batched_mask_to_box(masks))
    if n:
        _same(ours.stability_score(logits, 0.0, 1.0), amg.calculate_stability_score(logits, 0.0, 1.0))
    boxes = ours.mask_boxes(masks)
    crop = [int(rng.integers(0, 40)), int(rng.integers(0, 40))]
    crop += [crop[0] + w, crop[1] + h]
    image = [0, 0, crop[2] + int(rng.integers(0, 30)), crop[3] + int(rng.integers(0, 30))]
    _same(ours.near_crop_edge(boxes, crop, image), amg.is_box_near_crop_edge(boxes, crop, image))
    _same(ours.uncrop_boxes(boxes, crop), amg.uncrop_boxes_xyxy(boxes, crop))
    pts = torch.as_tensor(rng.random((n, 2)).astype(np.float32) * 50)
    _same(ours.uncrop_points(pts, crop), amg.uncrop_points(pts, crop))
    _same(ours.uncrop_masks(masks, crop, image[3], image[2]), amg.uncrop_masks(masks, crop, image[3], image[2]))


@pytest.mark.parametrize("hw", [(375, 500), (480, 640), (17, 1000), (1, 1)])
@pytest.mark.parametrize("layers", [0, 1, 2])
def test_grids_and_crop_boxes_equal_segment_anything(hw, layers):
    assert ours.crop_boxes(hw, layers, 512 / 1500) == amg.generate_crop_boxes(hw, layers, 512 / 1500)
    for mine, theirs in zip(ours.point_grids(32, layers, 2), amg.build_all_layer_point_grids(32, layers, 2)):
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs)
