"""ConfusionMatrix, per-sample mIoU and boundary F against hand-computed values."""

import numpy as np
import pytest

from sepl.errors import SeplError
from sepl.metrics import ConfusionMatrix, boundary_fscore, per_sample_miou


def test_confusion_matrix_hand_computed():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 255]])
    cm = ConfusionMatrix(num_classes=3).update(pred, gt)
    # rows gt, cols pred; the gt-255 pixel is skipped, the pred-255 pixel is a miss for class 1
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert cm.gt_counts.tolist() == [2, 3, 2]
    iou = cm.iou()
    assert iou == pytest.approx([1 / 3, 2 / 4, 1 / 2])
    assert cm.miou() == pytest.approx(np.mean([1 / 3, 1 / 2, 1 / 2]))
    assert cm.precision() == pytest.approx([1 / 2, 2 / 3, 1 / 1])
    assert cm.recall() == pytest.approx([1 / 2, 2 / 3, 1 / 2])
    assert cm.pixel_accuracy() == pytest.approx(4 / 7)


def test_accumulates_over_images_not_per_image_mean(rng):
    a_gt, a_pred = np.zeros((4, 4), int), np.zeros((4, 4), int)
    b_gt = np.ones((2, 2), int)
    b_pred = np.array([[1, 0], [0, 0]])
    cm = ConfusionMatrix(2)
    cm.update(a_pred, a_gt).update(b_pred, b_gt)
    both = ConfusionMatrix(2).update(np.concatenate([a_pred.ravel(), b_pred.ravel()]),
                                     np.concatenate([a_gt.ravel(), b_gt.ravel()]))
    assert np.array_equal(cm.matrix, both.matrix)
    assert cm.iou() == pytest.approx([16 / 19, 1 / 4])


def test_absent_class_is_nan_and_skipped():
    cm = ConfusionMatrix(4).update(np.array([0, 1]), np.array([0, 1]))
    assert np.isnan(cm.iou()[2]) and np.isnan(cm.iou()[3])
    assert cm.miou() == 1.0
    assert cm.miou(nan_as_zero=True) == 0.5


def test_matches_sklearn_style_reference(rng):
    c = 5
    cm = ConfusionMatrix(c)
    ref = np.zeros((c, c), np.int64)
    for _ in range(4):
        gt = rng.integers(0, c, (30, 40))
        gt[rng.random(gt.shape) < 0.1] = 255
        pred = rng.integers(0, c, (30, 40))
        cm.update(pred, gt)
        v = gt != 255
        np.add.at(ref, (gt[v], pred[v]), 1)
    assert np.array_equal(cm.matrix, ref)
    iu = np.diag(ref) / (ref.sum(1) + ref.sum(0) - np.diag(ref))
    assert cm.miou() == pytest.approx(np.nanmean(iu))


def test_bad_input_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(SeplError, match="outside 0..2"):
        cm.update(np.zeros((2, 2), int), np.full((2, 2), 7))
    with pytest.raises(SeplError, match="same image size"):
        cm.update(np.zeros((2, 3), int), np.zeros((2, 2), int))


def test_per_sample_miou_over_present_classes():
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 0, 1, 2]])
    # class 0: 1; class 1: 1/2; class 2 (pred only): 0; class 3 absent -> skipped
    assert per_sample_miou(pred, gt, num_classes=4) == pytest.approx((1 + 0.5 + 0) / 3)
    assert per_sample_miou(gt, gt, 4) == 1.0
    assert np.isnan(per_sample_miou(gt, np.full_like(gt, 255), 4))


def test_torch_inputs():
    torch = pytest.importorskip("torch")
    gt = torch.tensor([[0, 1], [1, 255]])
    pred = torch.tensor([[0, 1], [0, 1]])
    cm = ConfusionMatrix(2).update(pred, gt)
    assert cm.matrix.tolist() == [[1, 0], [1, 1]]


def test_boundary_fscore():
    gt = np.zeros((40, 40), int)
    gt[10:30, 10:30] = 1
    assert boundary_fscore(gt, gt)["f"] == 1.0
    shifted = np.roll(gt, 1, axis=1)
    assert boundary_fscore(shifted, gt, tolerance=2)["f"] == 1.0
    far = np.roll(gt, 6, axis=1)
    assert boundary_fscore(far, gt, tolerance=2)["f"] < 0.7
    # a VOC-style void band around the object: the boundary runs through it
    band = gt.copy()
    band[9:31, 9:31][(np.pad(np.ones((20, 20)), 1) == 0)] = 255
    assert boundary_fscore(gt, band, tolerance=2)["f"] == 1.0


def _blocky(rng, shape, values, blocks):
    """A piecewise-constant uint8 map: ``blocks`` random rectangles of random values."""
    m = np.full(shape, rng.choice(values), np.uint8)
    for _ in range(blocks):
        y0, x0 = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        y1, x1 = rng.integers(y0, shape[0] + 1), rng.integers(x0, shape[1] + 1)
        m[y0:y1, x0:x1] = rng.choice(values)
    return m


def test_pair_counts_equal_per_pixel_bincount(rng):
    from sepl.metrics import pair_counts

    for trial in range(60):
        shape = (int(rng.integers(1, 40)), int(rng.integers(1, 60)))
        values = [0, 1, 2, 3, 20, 255]
        if trial % 3 == 2:  # noisy maps take the per-pixel branch
            gt, pred = (rng.choice(values, shape).astype(np.uint8) for _ in range(2))
        else:
            gt, pred = _blocky(rng, shape, values, 6), _blocky(rng, shape, values, 6)
        ref = np.bincount((gt.astype(np.int64) * 256 + pred).ravel(), minlength=65536)
        codes, counts = pair_counts(gt, pred)
        assert codes.tolist() == np.flatnonzero(ref).tolist() and counts.tolist() == ref[codes].tolist()
    assert all(a.size == 0 for a in pair_counts(np.zeros((0, 3), np.uint8), np.zeros((0, 3), np.uint8)))


def test_score_pair_uint8_path_equals_general_path(rng):
    """ScorePair's one-pass path for uint8 maps gives the counts and errors of the
    general (any integer dtype) path, with and without a name lookup."""
    from sepl.labels.raw import encode_array
    from sepl.labels.scoring import ScorePair

    def row(gt, pred):
        return {"fields": {"gt": {"_cls": "Segmentation", "mask": encode_array(gt)},
                           "pred": {"_cls": "Segmentation", "mask": encode_array(pred)}}}

    def outcome(job, r):
        try:
            return job(r).tolist()
        except SeplError as e:
            return e.message

    lut = np.arange(256)
    lut[[1, 2]] = [2, 1]
    seen = set()
    for trial in range(80):
        values = [0, 1, 2, 3, 255] + ([7] if trial % 4 == 0 else [])  # 7: outside the classes
        gt = _blocky(rng, (30, 40), values if trial % 5 == 0 else [0, 1, 2, 3, 255], 5)
        pred = _blocky(rng, (30, 40), values, 5)
        for table in (None, lut):
            job = ScorePair("pred", "gt", 4, 255, table)
            fast, general = outcome(job, row(gt, pred)), outcome(job, row(gt.astype(np.int32), pred.astype(np.int32)))
            assert fast == general
            seen.add(type(fast))
    assert seen == {list, str}  # both counts and refusals were compared


def test_sample_scores_equal_confusion_matrix(rng):
    from sepl.labels.scoring import sample_scores

    for _ in range(30):
        gt, pred = _blocky(rng, (20, 30), [0, 1, 2, 255], 4), _blocky(rng, (20, 30), [0, 1, 3, 255], 4)
        cm = ConfusionMatrix(5).update(pred, gt)
        miou, ious, cells = sample_scores(cm._m, 5)
        iou = cm.iou()
        assert ious == {c: float(iou[c]) for c in np.flatnonzero(~np.isnan(iou))}
        assert miou == cm.present_miou() or (np.isnan(miou) and np.isnan(cm.present_miou()))
        assert cells.tolist() == [[i, j, int(cm.matrix[i, j])] for i, j in np.argwhere(cm.matrix)]
