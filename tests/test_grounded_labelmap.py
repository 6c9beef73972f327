"""Painting rules on hand-built detections."""

import numpy as np
import pytest

from sepl.errors import SeplError
from sepl.grounded.labelmap import dedup_across_classes, paint_label_map


def _box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.fixture
def scene():
    """A big table mask (class 11) covering a bottle (class 5), then a rival 'dog' (12) mask
    nearly equal to a 'cat' (8) mask. Detection order: bottle, table, dog, cat."""
    h, w = 10, 12
    table = _box(h, w, 2, 9, 0, 6)
    bottle = _box(h, w, 3, 5, 1, 3)
    cat = _box(h, w, 2, 8, 7, 12)
    dog = cat.copy()
    dog[7, 7:12] = False  # IoU with cat = 25/30
    masks = np.stack([bottle, table, dog, cat])
    classes = np.array([5, 11, 12, 8])
    scores = np.array([0.4, 0.6, 0.35, 0.7])
    return masks, classes, scores


def test_reference_paints_in_detection_order_last_writer_wins(scene):
    masks, classes, scores = scene
    out = paint_label_map(masks, classes, scores, rule="reference")
    assert out.dtype == np.uint8 and out.shape == (10, 12)
    assert (out[masks[1]] == 11).all()           # table painted after bottle: bottle gone
    assert (out[masks[3]] == 8).all()            # cat painted last
    assert (out[~masks.any(0)] == 0).all()
    reversed_order = paint_label_map(masks[::-1], classes[::-1], scores[::-1], rule="reference")
    assert (reversed_order[masks[0]] == 5).all()  # same detections, other order, other answer


def test_score_rule_highest_score_wins(scene):
    masks, classes, scores = scene
    out = paint_label_map(masks, classes, scores, rule="score")
    assert (out[masks[1]] == 11).all()           # table 0.6 beats bottle 0.4
    assert (out[masks[3]] == 8).all()            # cat 0.7 beats dog 0.35
    np.testing.assert_array_equal(out, paint_label_map(masks[::-1], classes[::-1], scores[::-1], rule="score"))


def test_area_rule_smallest_wins_after_cross_class_dedup(scene):
    masks, classes, scores = scene
    out = paint_label_map(masks, classes, scores, rule="area", dedup_iou=0.8)
    assert (out[masks[0]] == 5).all()            # bottle on the table keeps its class
    assert (out[masks[1] & ~masks[0]] == 11).all()
    assert (out[masks[3]] == 8).all()            # dog (IoU 0.83 with a better cat) was dropped
    # without dedup the smaller dog mask wins where it lies
    raw = paint_label_map(masks, classes, scores, rule="area", dedup_iou=None)
    assert (raw[masks[2]] == 12).all() and (raw[7, 7:12] == 8).all()
    np.testing.assert_array_equal(out, paint_label_map(masks[::-1], classes[::-1], scores[::-1], rule="area"))


def test_ignore_conflicts_marks_pixels_claimed_by_two_classes(scene):
    masks, classes, scores = scene
    out = paint_label_map(masks, classes, scores, rule="area", dedup_iou=None, ignore_conflicts=True)
    assert (out[masks[0]] == 255).all()          # bottle vs table
    assert (out[masks[2]] == 255).all()          # dog vs cat
    assert (out[masks[1] & ~masks[0]] == 11).all()
    # same-class overlaps are no conflict
    two = np.stack([masks[1], masks[0]])
    assert 255 not in paint_label_map(two, [11, 11], [0.5, 0.5], ignore_conflicts=True)


def test_dedup_keeps_same_class_duplicates_and_the_better_rival():
    a = _box(6, 6, 0, 4, 0, 4)
    masks = np.stack([a, a, a])
    keep = dedup_across_classes(masks, np.array([1, 1, 2]), np.array([0.5, 0.6, 0.4]), 0.8)
    assert list(keep) == [True, True, False]
    keep = dedup_across_classes(masks, np.array([1, 1, 2]), np.array([0.5, 0.6, 0.9]), 0.8)
    assert list(keep) == [False, False, True]


def test_no_masks_is_all_background_and_bad_input_fails():
    out = paint_label_map(np.zeros((0, 5, 7), bool), [], [], rule="area")
    assert out.shape == (5, 7) and not out.any()
    assert paint_label_map(np.zeros((0,)), [], shape=(3, 4)).shape == (3, 4)
    m = np.ones((1, 3, 3), bool)
    with pytest.raises(SeplError, match="unknown painting rule"):
        paint_label_map(m, [1], [0.5], rule="biggest")
    with pytest.raises(SeplError, match="class ids"):
        paint_label_map(m, [0], [0.5])
    with pytest.raises(SeplError, match="needs detection scores"):
        paint_label_map(m, [1], None, rule="score")
    with pytest.raises(SeplError, match="1 masks but 2 class ids"):
        paint_label_map(m, [1, 2], [0.5, 0.5])
