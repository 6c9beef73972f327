"""SEPL merge: the official mode pinned on each quirk of the released code, the paper mode on
its rules, equivalence with a per-class loop port, order independence, bad input."""

import numpy as np
import pytest

from sepl.errors import SeplError
from sepl.merge import (REASON_BACKGROUND, REASON_NO_OVERLAP, REASON_OP, REASON_OS, REASON_REJECTED, merge,
                        merge_reference_loop)


def box(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def random_masks(rng, shape, n, max_r=None):
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    max_r = max_r or max(h, w) // 2
    out = np.zeros((n, h, w), bool)
    for k in range(n):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        ry, rx = rng.integers(1, max_r, 2)
        out[k] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    return out


# --- official mode: one hand-built case per quirk of max_iou_imp2.py --------------------------


def test_official_selects_on_os_strict_and_op_nonstrict():
    seed = np.zeros((10, 10), np.uint8)
    seed[0:4, :] = 1  # |P1| = 40
    m_half = box(seed.shape, 0, 2, 0, 10) | box(seed.shape, 5, 7, 0, 10)  # 20 in, 20 out: o_s = 0.5
    m_os = m_half.copy()
    m_os[6, 9] = False  # o_s = 20/39 > 0.5
    res = merge(seed, m_half[None], mode="official")
    assert not res.records["selected"][0] and res.records["reason"][0] == REASON_REJECTED
    res = merge(seed, m_os[None], mode="official")
    assert res.records["selected"][0] and res.records["reason"][0] == REASON_OS
    assert res.records["o_s"][0] == pytest.approx(20 / 39)
    seed[0:4, :] = 0
    seed[0:4, 0:5] = 1  # |P1| = 20
    # o_p exactly 0.85: |M&P| = 17 of 20 with a mask 4x larger -> selected by o_p (>=)
    m_op = np.zeros(seed.shape, bool)
    m_op.reshape(-1)[np.flatnonzero(seed.reshape(-1) == 1)[:17]] = True
    m_op[5:, :] = True  # 50 outside -> o_s = 17/67
    res = merge(seed, m_op[None], mode="official")
    assert res.records["selected"][0] and res.records["reason"][0] == REASON_OP
    assert res.records["o_p"][0] == pytest.approx(0.85)
    assert (res.labels[m_op] == 1).all()


def test_official_greedy_lowest_class_claims():
    seed = np.zeros((10, 10), np.uint8)
    seed[0:10, 0:2] = 1  # 20 px
    seed[0:10, 2:10] = 2  # 80 px
    whole = np.ones((10, 10), bool)  # o_p(1) = 1 -> claimed by class 1 though class 2 overlaps more
    res = merge(seed, whole[None], mode="official")
    assert res.records["class_id"][0] == 1
    # class 2's CAM pixels are under a mask claimed by an earlier class: they keep class 2
    assert (res.labels[:, 2:] == 2).all() and (res.labels[:, :2] == 1).all()
    assert np.array_equal(res.labels, merge_reference_loop(seed, whole[None], 21))


def test_official_rejected_mask_erases_cam():
    seed = np.zeros((10, 10), np.uint8)
    seed[0:2, 0:2] = 3  # 4 px CAM region
    m = box(seed.shape, 0, 10, 0, 10)
    m[:, 5:] = False  # 50 px, covers the CAM region: o_s = 4/50, o_p = 1 -> selected (o_p)
    res = merge(seed, m[None], mode="official")
    assert (res.labels[m] == 3).all()  # the large-background-mask failure
    m2 = box(seed.shape, 0, 1, 0, 10)  # covers half the CAM region: o_p 0.5, o_s 0.2: rejected
    res = merge(seed, m2[None], mode="official")
    assert not res.records["selected"][0]
    assert (res.labels[0, 0:2] == 0).all()  # CAM under a rejected mask becomes 0
    assert (res.labels[1, 0:2] == 3).all()  # CAM with no mask is kept


def test_official_later_class_overwrites_and_ignore_becomes_zero():
    seed = np.zeros((6, 6), np.uint8)
    seed[0:3, 0:3] = 1
    seed[0:3, 3:6] = 2
    seed[5, :] = 255
    m1 = box(seed.shape, 0, 4, 0, 4)  # class 1 by o_s (9/16)
    m2 = box(seed.shape, 0, 3, 2, 6)  # class 2 by o_s (9/12), overlaps m1 on column 2-3
    res = merge(seed, np.stack([m1, m2]), mode="official")
    assert res.records["class_id"].tolist() == [1, 2]
    assert (res.labels[0:3, 2:4] == 2).all()  # the higher class paints last
    assert (res.labels[5] == 0).all() and res.labels.max() < 255  # no 255 in the output
    kept = merge(seed, np.stack([m1, m2]), mode="official", keep_ignore=True)
    assert (kept.labels[5] == 255).all()
    big = np.zeros((6, 6), bool)
    big[4:6, :] = True  # covers the ignore row; o_p(1)=0 o_s=0 -> unclaimed -> ignore stays 0
    res = merge(seed, np.stack([m1, m2, big]), mode="official", keep_ignore=True)
    assert (res.labels[5] == 255).all()


def test_official_background_never_claims():
    seed = np.zeros((8, 8), np.uint8)
    seed[0, 0] = 1
    m = box(seed.shape, 4, 8, 4, 8)  # pure background
    res = merge(seed, m[None], mode="official")
    assert res.records["class_id"][0] == -1 and res.records["reason"][0] == REASON_NO_OVERLAP
    assert res.labels[0, 0] == 1 and res.labels.sum() == 1


# --- official == the per-class loop port -------------------------------------------------------


@pytest.mark.parametrize("seed_id", [0, 1, 2])
def test_official_equals_reference_loop_random(rng, seed_id):
    rng = np.random.default_rng(seed_id)
    shape = (37, 53)
    seed = np.zeros(shape, np.uint8)
    for c in rng.choice(np.arange(1, 21), 3, replace=False):
        y, x = rng.integers(0, 30), rng.integers(0, 45)
        seed[y:y + rng.integers(3, 20), x:x + rng.integers(3, 25)] = c
    seed[rng.random(shape) < 0.05] = 255
    masks = random_masks(rng, shape, 40)
    masks[0] = True  # whole-image mask
    res = merge(seed, masks, mode="official", num_classes=21)
    assert np.array_equal(res.labels, merge_reference_loop(seed, masks, 21))


def test_official_equals_reference_loop_on_transcam(voc_train, rng):
    """Exact equivalence on the real TransCAM seeds with object-like synthetic masks."""
    from sepl.labelio import read_label

    ids = (voc_train / "train.txt").read_text().split()
    for sid in rng.choice(ids, 6, replace=False):
        seed = read_label(voc_train / "transcam" / f"{sid}.png")
        gt = read_label(voc_train / "gt" / f"{sid}.png")
        masks = list(random_masks(rng, seed.shape, 30))
        for c in np.unique(gt):  # GT-derived object masks, shifted
            if c not in (0, 255):
                masks.append(np.roll(gt == c, rng.integers(-8, 8, 2), axis=(0, 1)))
        masks.append(np.ones(seed.shape, bool))
        masks = np.stack(masks)
        res = merge(seed, masks, mode="official", num_classes=21)
        assert np.array_equal(res.labels, merge_reference_loop(seed, masks, 21)), sid


# --- paper mode --------------------------------------------------------------------------------


def test_paper_assignment_argmax_and_background_drop():
    seed = np.zeros((10, 10), np.uint8)
    seed[0:10, 0:2] = 1
    seed[0:10, 2:10] = 2
    whole = np.ones((10, 10), bool)
    res = merge(seed, whole[None], mode="paper")
    assert res.records["class_id"][0] == 2  # the class it overlaps most, not the lowest
    seed2 = np.zeros((10, 10), np.uint8)
    seed2[0:2, 0:2] = 3
    res = merge(seed2, whole[None], mode="paper")
    assert res.records["class_id"][0] == 0 and res.records["reason"][0] == REASON_BACKGROUND
    assert not res.records["selected"][0]
    # no large-background-mask failure: nothing painted 3 outside the CAM region
    assert (res.labels[2:, :] == 0).all() and (res.labels[:, 2:] == 0).all()
    res_u = merge(seed2, whole[None], mode="paper", fallback="unselected")
    assert (res_u.labels[0:2, 0:2] == 3).all()  # the CAM kept where no *selected* mask lies
    res_m = merge(seed2, whole[None], mode="paper", fallback="unmasked")
    assert (res_m.labels == 0).all()  # the CAM kept only where no mask lies


def test_paper_ties_go_to_lower_class_and_thresholds_are_strict():
    seed = np.zeros((4, 4), np.uint8)
    seed[:, 0:2] = 1
    seed[:, 2:4] = 2
    m = box(seed.shape, 0, 2, 1, 3)  # 2 px of class 1, 2 px of class 2
    res = merge(seed, m[None], mode="paper")
    assert res.records["class_id"][0] == 1 and res.records["o_s"][0] == 0.5
    assert not res.records["selected"][0]  # o_s = 0.5 is not > 0.5; o_p = 0.25
    seed = np.zeros((10, 10), np.uint8)
    seed[0:4, 0:5] = 1
    m_op = np.zeros(seed.shape, bool)
    m_op.reshape(-1)[np.flatnonzero(seed.reshape(-1) == 1)[:17]] = True
    assert not merge(seed, m_op[None], mode="paper", os_thresh=1.0).records["selected"][0]  # o_p 0.85 not > 0.85
    assert merge(seed, m_op[None], mode="official", os_thresh=1.0).records["selected"][0]  # >= in official


def test_paper_smaller_mask_wins_and_cam_fallback():
    seed = np.zeros((10, 10), np.uint8)
    seed[0:6, 0:6] = 1
    seed[3:6, 3:6] = 2
    big = box(seed.shape, 0, 6, 0, 6)  # class 1 (27 of 36)
    small = box(seed.shape, 3, 6, 3, 6)  # class 2
    res = merge(seed, np.stack([small, big]), mode="paper")
    assert res.records["class_id"].tolist() == [2, 1] and res.records["selected"].all()
    assert (res.labels[3:6, 3:6] == 2).all() and res.labels[0, 0] == 1
    same = merge(seed, np.stack([big, small]), mode="paper")
    assert np.array_equal(res.labels, same.labels)


def test_paper_keep_ignore():
    seed = np.zeros((6, 6), np.uint8)
    seed[0:3, 0:3] = 1
    seed[3, :] = 255
    m = box(seed.shape, 0, 4, 0, 3)  # covers 3 ignore px, class 1 by o_s 9/12
    res = merge(seed, m[None], mode="paper", keep_ignore=True)
    assert (res.labels[3, 0:3] == 1).all() and (res.labels[3, 3:] == 255).all()
    assert (merge(seed, m[None], mode="paper").labels[3, 3:] == 0).all()


# --- inputs ------------------------------------------------------------------------------------


def test_inputs_list_uint8_rle_and_torch(rng):
    seed = np.zeros((20, 30), np.uint8)
    seed[2:12, 3:15] = 4
    masks = random_masks(rng, seed.shape, 12)
    ref = merge(seed, masks, mode="paper")
    assert np.array_equal(merge(seed, list(masks), mode="paper").labels, ref.labels)
    assert np.array_equal(merge(seed, masks.astype(np.uint8) * 255, mode="paper").labels, ref.labels)
    from sepl.amgio import encode_rle

    rles = [encode_rle(m) for m in masks]
    assert np.array_equal(merge(seed, rles, mode="paper").labels, ref.labels)
    assert np.array_equal(merge(seed, [dict(segmentation=r, area=1) for r in rles]).labels, ref.labels)
    torch = pytest.importorskip("torch")
    out = merge(torch.from_numpy(seed), torch.from_numpy(masks), mode="paper")
    assert isinstance(out.labels, torch.Tensor) and np.array_equal(out.labels.numpy(), ref.labels)


def test_bad_input_names_the_image():
    seed = np.zeros((5, 5), np.uint8)
    with pytest.raises(SeplError, match="img7.*4x4 but the seed is 5x5"):
        merge(seed, np.zeros((2, 4, 4), bool), name="img7")
    with pytest.raises(SeplError, match="not binary"):
        merge(seed, np.full((1, 5, 5), 0.5), name="img7")
    with pytest.raises(SeplError, match="empty"):
        merge(seed, np.zeros((0, 5, 5), bool), name="img7")
    assert merge(seed + 1, np.zeros((0, 5, 5), bool), allow_empty=True).labels.tolist() == (seed + 1).tolist()
    with pytest.raises(SeplError, match=r"\[30\] >= num_classes=21"):
        merge(np.full((5, 5), 30, np.uint8), np.ones((1, 5, 5), bool), num_classes=21, name="img7")
    with pytest.raises(SeplError, match="mode"):
        merge(seed, np.ones((1, 5, 5), bool), mode="fast")
    with pytest.raises(SeplError, match="different sizes"):
        merge(seed, [np.ones((5, 5), bool), np.ones((4, 4), bool)])


# --- properties (hypothesis) -------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def scenes(draw):
    h, w = draw(st.integers(3, 12)), draw(st.integers(3, 12))
    c = draw(st.integers(2, 5))
    seed = np.array(draw(st.lists(st.sampled_from(list(range(c)) + [255]), min_size=h * w, max_size=h * w)),
                    np.uint8).reshape(h, w)
    n = draw(st.integers(1, 7))
    bits = draw(st.lists(st.booleans(), min_size=n * h * w, max_size=n * h * w))
    masks = np.array(bits, bool).reshape(n, h, w)
    perm = draw(st.permutations(list(range(n))))
    return seed, masks, c, np.array(perm)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes(), st.sampled_from(["official", "paper"]), st.booleans())
def test_order_independence(scene, mode, keep_ignore):
    seed, masks, c, perm = scene
    a = merge(seed, masks, mode=mode, num_classes=c, keep_ignore=keep_ignore)
    b = merge(seed, masks[perm], mode=mode, num_classes=c, keep_ignore=keep_ignore)
    assert np.array_equal(a.labels, b.labels)
    for key in ("class_id", "selected", "o_s", "o_p"):  # records follow their masks
        assert np.array_equal(np.asarray(a.records[key])[perm], np.asarray(b.records[key]))


@settings(max_examples=150, deadline=None)
@given(scenes())
def test_official_equals_loop_port(scene):
    seed, masks, c, _ = scene
    res = merge(seed, masks, mode="official", num_classes=c)
    assert np.array_equal(res.labels, merge_reference_loop(seed, masks, c))


@settings(max_examples=150, deadline=None)
@given(scenes(), st.sampled_from(["official", "paper"]))
def test_seed_regions_as_masks_return_the_seed(scene, mode):
    seed, _, c, _ = scene
    seed = np.where(seed == 255, 0, seed).astype(np.uint8)
    regions = np.stack([seed == v for v in np.unique(seed)])
    res = merge(seed, regions, mode=mode, num_classes=c)
    assert np.array_equal(res.labels, seed)
    # with an ignore value kept, the regions of the labelled pixels still give the seed back
    seed2 = seed.copy()
    seed2[0, :] = 255
    regions2 = np.stack([seed2 == v for v in np.unique(seed2) if v != 255])
    res2 = merge(seed2, regions2, mode=mode, num_classes=c, keep_ignore=True)
    assert np.array_equal(res2.labels, seed2)


def test_paper_assigns_by_iou_not_count():
    # a CAM that covers a third of an object: the object's mask overlaps more background
    # pixels than class pixels, but its IoU with the class region is the larger
    seed = np.zeros((20, 20), np.uint8)
    seed[5:15, 5:9] = 7  # 40 px CAM
    obj = box(seed.shape, 5, 15, 5, 15)  # 100 px object: 40 class, 60 background
    res = merge(seed, obj[None], mode="paper")
    assert res.records["class_id"][0] == 7 and res.records["selected"][0]  # o_p = 1
    assert (res.labels[obj] == 7).all()
    off = merge(seed, obj[None], mode="official")
    assert np.array_equal(off.labels, res.labels)


# --- the crops kernel (boxes + crops, FiftyOne's layout) == the full-plane kernel == the loop -------

from sepl.cropped import CroppedMasks  # noqa: E402


def loose_crops(rng, masks):
    """The masks as boxes + crops with random False margins around the tight boxes."""
    n, h, w = masks.shape
    tight = CroppedMasks.from_planes(masks)
    boxes, crops = [], []
    for k, (x0, y0, x1, y1) in enumerate(tight.boxes.tolist()):
        if x1 > x0 and rng.random() < 0.7:
            x0, y0 = max(0, x0 - int(rng.integers(0, 70))), max(0, y0 - int(rng.integers(0, 3)))
            x1, y1 = min(w, x1 + int(rng.integers(0, 70))), min(h, y1 + int(rng.integers(0, 3)))
        elif x1 == x0 and rng.random() < 0.5:  # an empty mask with a non-empty box
            x0, y0, x1, y1 = 0, 0, min(w, 3), min(h, 2)
        boxes.append([x0, y0, x1, y1])
        crops.append(masks[k, y0:y1, x0:x1].copy())
    return CroppedMasks((h, w), boxes, crops)


def assert_same(a, b, what=""):
    assert np.array_equal(a.labels, b.labels), what
    for key in a.records:
        assert np.array_equal(np.asarray(a.records[key]), np.asarray(b.records[key])), (what, key)


@st.composite
def wide_scenes(draw):
    """Scenes wide enough for crop rows to span several 64-pixel words."""
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 150))
    c = draw(st.integers(2, 5))
    seed = np.array(draw(st.lists(st.sampled_from(list(range(c)) + [255]), min_size=h * w, max_size=h * w)),
                    np.uint8).reshape(h, w)
    n = draw(st.integers(0, 6))
    masks = np.zeros((n, h, w), bool)
    for k in range(n):  # rectangles with holes: boxes at any column, some empty or whole-image
        y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        y1, x1 = draw(st.integers(y0, h)), draw(st.integers(x0, w))
        masks[k, y0:y1, x0:x1] = True
        holes = draw(st.lists(st.integers(0, h * w - 1), max_size=8))
        masks[k].reshape(-1)[holes] = False
    return seed, masks, c, draw(st.integers(0, 2 ** 32 - 1))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wide_scenes(), st.sampled_from(["official", "paper"]), st.booleans(),
       st.sampled_from(["unmasked", "unselected"]))
def test_crops_kernel_equals_planes_kernel(scene, mode, keep_ignore, fallback):
    seed, masks, c, r = scene
    kw = dict(mode=mode, num_classes=c, keep_ignore=keep_ignore, fallback=fallback, allow_empty=True)
    ref = merge(seed, masks, kernel="planes", **kw)
    assert_same(ref, merge(seed, masks, kernel="crops", **kw), "tight")
    assert_same(ref, merge(seed, loose_crops(np.random.default_rng(r), masks), **kw), "loose")
    if mode == "official" and len(masks) and not keep_ignore:  # the loop port drops ignore pixels
        assert np.array_equal(ref.labels, merge_reference_loop(seed, masks, c))


@settings(max_examples=150, deadline=None)
@given(scenes(), st.sampled_from(["official", "paper"]))
def test_crops_kernel_equals_planes_kernel_random_pixels(scene, mode):
    seed, masks, c, _ = scene
    ref = merge(seed, masks, mode=mode, num_classes=c, kernel="planes")
    assert_same(ref, merge(seed, CroppedMasks.from_planes(masks), mode=mode, num_classes=c))


def test_crops_kernel_on_transcam_seeds(voc_train, rng):
    """Both kernels and the loop on real TransCAM seeds with SAM-like synthetic masks (objects
    shifted and split, a whole-image and an all-background mask, ellipses), both modes."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from bench_merge import as_fiftyone_stores, object_masks

    from sepl.labelio import read_label

    ids = (voc_train / "train.txt").read_text().split()
    for sid in rng.choice(ids, 5, replace=False):
        seed = read_label(voc_train / "transcam" / f"{sid}.png")
        gt = read_label(voc_train / "gt" / f"{sid}.png")
        masks = object_masks(rng, gt, 60)
        rel, crops = as_fiftyone_stores(masks)
        cm = CroppedMasks.from_relative(rel, crops, seed.shape)
        assert np.array_equal(cm.to_planes(), masks)
        for mode in ("official", "paper"):
            ref = merge(seed, masks, mode=mode, num_classes=21, kernel="planes")
            assert_same(ref, merge(seed, cm, mode=mode, num_classes=21), f"{sid} {mode}")
            assert_same(ref, merge(seed, loose_crops(rng, masks), mode=mode, num_classes=21), f"{sid} {mode} loose")
        assert np.array_equal(merge(seed, cm, mode="official", num_classes=21).labels,
                              merge_reference_loop(seed, masks, 21)), sid
        gt_seed = gt  # GT as a seed: 255 boundaries exercise the ignore value
        for mode in ("official", "paper"):
            ref = merge(gt_seed, masks, mode=mode, num_classes=21, kernel="planes", keep_ignore=True)
            assert_same(ref, merge(gt_seed, cm, mode=mode, num_classes=21, keep_ignore=True), f"{sid} gt {mode}")


def test_crops_kernel_in_chunks(monkeypatch, rng):
    """A staging buffer smaller than one mask still gives the same result (memory bound)."""
    import sepl.cropped

    seed = np.zeros((40, 200), np.uint8)
    seed[5:30, 10:90] = 3
    seed[10:38, 120:190] = 7
    masks = random_masks(rng, seed.shape, 25)
    masks[0] = True
    ref = merge(seed, masks, mode="paper", kernel="planes")
    monkeypatch.setattr(sepl.cropped, "_CHUNK_BYTES", 64)
    assert_same(ref, merge(seed, masks, mode="paper"))
    assert_same(merge(seed, masks, mode="official", kernel="planes"), merge(seed, masks, mode="official"))


@settings(max_examples=100, deadline=None)
@given(wide_scenes())
def test_crop_kernel_reductions_in_any_call_order(scene):
    """CropKernel == the full-plane kernel whatever is asked first: areas before intersections
    (packing in mask order), a second intersection with other sets (packing again with those
    sets' masks first), unions, unpacking and labels."""
    from sepl.cropped import CropKernel
    from sepl.merge import _Masks

    seed, masks, c, r = scene
    h, w = seed.shape
    flat = seed.reshape(-1)
    crops = loose_crops(np.random.default_rng(r), masks)
    planes = _Masks(masks.reshape(len(masks), h * w), (h, w))
    for area_first in (True, False):
        kern = CropKernel(crops)
        if area_first:
            assert np.array_equal(kern.area(), planes.area())
        for values in ([1], [2, 255], [0]):
            got = kern.inters([kern.value_bits(flat, v) for v in values])
            assert np.array_equal(got, planes.inters([planes.value_bits(flat, v) for v in values])), values
        assert np.array_equal(kern.area(), planes.area())
    rows = np.flatnonzero(np.arange(len(masks)) % 2 == 0)
    if rows.size:
        assert np.array_equal(kern.union(rows), planes.union(rows))
        assert np.array_equal(kern.unpack(kern.union_bits(rows)), planes.unpack(planes.union_bits(rows)))
    else:
        assert kern.union_bits(rows) is None and planes.union(rows) is None
    a, b = kern.value_bits(flat, 1), kern.value_bits(flat, 2)
    pa, pb = planes.value_bits(flat, 1), planes.value_bits(flat, 2)
    assert np.array_equal(kern.labels([(3, a), (9, b)]), planes.labels([(3, pa), (9, pb)]))
    assert np.array_equal(kern.labels([(3, a), (9, b)]), np.where(flat == 1, 3, np.where(flat == 2, 9, 0)))
    assert np.array_equal(kern.labels([]), np.zeros(h * w, np.uint8))


def test_from_relative_maps_pixels_as_the_fiftyone_loader(rng):
    """CroppedMasks.from_relative == sepl.fo.convert.detections_to_masks on fo.Detections:
    rounding of relative boxes, clipping, boxes without a mask, crops of another size."""
    fo = pytest.importorskip("fiftyone")
    from sepl.fo.convert import detections_to_masks, masks_to_detections

    h, w = 37, 83
    masks = random_masks(rng, (h, w), 12)
    masks[3] = False
    dets = masks_to_detections(masks)
    extra = [
        fo.Detection(bounding_box=[0.1, 0.2, 0.3, 0.4]),  # no mask: the whole box
        fo.Detection(bounding_box=[0.5, 0.5, 0.25, 0.25], mask=rng.random((4, 30)) > 0.5),  # resized
        fo.Detection(bounding_box=[-0.1, 0.9, 0.5, 0.5], mask=rng.random((18, 41)) > 0.5),  # clipped
        fo.Detection(bounding_box=[1.2, 0.1, 0.1, 0.1], mask=np.ones((3, 3), bool)),  # outside: empty
        fo.Detection(bounding_box=[0.5 / w, 2.5 / h, 1.5 / w, 3.0 / h],  # half-pixel edges
                     mask=(rng.random((3, 2)) > 0.3).astype(np.uint8)),
    ]
    dets.detections.extend(extra)
    ref = detections_to_masks(dets, h, w)
    boxes = [d.bounding_box for d in dets.detections]
    crops = [d.mask for d in dets.detections]
    cm = CroppedMasks.from_relative(boxes, crops, (h, w))
    assert np.array_equal(cm.to_planes(), ref)
    seed = np.zeros((h, w), np.uint8)
    seed[5:25, 10:60] = 2
    for mode in ("official", "paper"):
        assert_same(merge(seed, ref, mode=mode, kernel="planes"), merge(seed, cm, mode=mode))


def test_cropped_masks_bad_input():
    with pytest.raises(SeplError, match="outside the 10x10 image"):
        CroppedMasks((10, 10), [[0, 0, 11, 5]], [np.ones((5, 11), bool)], name="img3")
    with pytest.raises(SeplError, match="crop is"):
        CroppedMasks((10, 10), [[0, 0, 4, 5]], [np.ones((4, 4), bool)])
    with pytest.raises(SeplError, match="2 boxes but 1 crops"):
        CroppedMasks((10, 10), [[0, 0, 4, 5], [0, 0, 1, 1]], [np.ones((5, 4), bool)])
    with pytest.raises(SeplError, match="not binary"):
        CroppedMasks((10, 10), [[0, 0, 2, 2]], [np.full((2, 2), 7)])
    cm = CroppedMasks((10, 10), [[0, 0, 2, 2]], [np.full((2, 2), 255, np.uint8)])
    assert cm.crops[0].dtype == bool and cm.to_planes().sum() == 4
    with pytest.raises(SeplError, match="img3.*10x10 but the seed is 8x8"):
        merge(np.zeros((8, 8), np.uint8), cm, name="img3")
    with pytest.raises(SeplError, match="kernel"):
        merge(np.zeros((10, 10), np.uint8), cm, kernel="gpu")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 2, 20, 31, 32, 33, 80, 254, 255]), max_size=80), st.booleans())
def test_value_counts_equal_bincount(values, wide):
    from sepl.merge import _value_counts

    flat = np.array(values, np.int64 if wide else np.uint8)
    assert np.array_equal(_value_counts(flat), np.bincount(flat, minlength=1))


def test_torch_kernel_paths_match_numpy(rng):
    """The torch branch of the full-plane kernel (used for CUDA tensors) on CPU tensors gives the
    numpy kernel's reductions; no CUDA device is needed to exercise its code."""
    torch = pytest.importorskip("torch")
    from sepl.merge import _Masks

    masks = random_masks(rng, (20, 70), 9).reshape(9, -1)
    sets = [rng.random(20 * 70) < 0.3, rng.random(20 * 70) < 0.1]
    a, t = _Masks(masks, (20, 70)), _Masks(torch.from_numpy(masks))
    assert t.torch and np.array_equal(a.area(), t.area())
    planes = [a.bits(s) for s in sets]
    assert np.array_equal(a.inters(planes), t.inters(planes))
    assert np.array_equal(a.union_bits(rows := np.array([1, 4, 7])), t.union_bits(rows))
    assert np.array_equal(a.union(rows), t.union(rows))
    pixels = np.flatnonzero(masks[rows].any(0))[:50]
    assert np.array_equal(a.max_key(rows, np.array([3, 1, 2]), pixels), t.max_key(rows, np.array([3, 1, 2]), pixels))


# --- the compiled loops of the crops kernel (sepl._jit) == its numpy code -------------------------

import contextlib  # noqa: E402

from sepl import _jit  # noqa: E402


@contextlib.contextmanager
def jit_mode(mode):
    saved = _jit.MODE
    _jit.MODE = mode
    try:
        yield
    finally:
        _jit.MODE = saved


@pytest.mark.skipif(not _jit.AVAILABLE, reason="numba is not installed")
@settings(max_examples=150, deadline=None)
@given(wide_scenes(), st.sampled_from(["official", "paper"]), st.booleans())
def test_compiled_loops_equal_numpy_code(scene, mode, keep_ignore):
    """Merges, intersections (several sets, areas asked first or not) and unions of the crops
    kernel are the same with the numba loops as with the numpy code, on tight and loose crops."""
    from sepl.cropped import CropKernel

    seed, masks, c, r = scene
    flat = seed.reshape(-1)
    kw = dict(mode=mode, num_classes=c, keep_ignore=keep_ignore, allow_empty=True)
    for crops in (CroppedMasks.from_planes(masks), loose_crops(np.random.default_rng(r), masks)):
        got = {}
        for m in ("never", "always"):
            with jit_mode(m):
                kern = CropKernel(crops)
                assert kern._jit == (m == "always")
                inters = kern.inters([kern.value_bits(flat, v) for v in (1, 2, 255)])
                rows = np.flatnonzero(np.arange(len(masks)) % 3 != 1)
                got[m] = (merge(seed, crops, **kw), inters, kern.area(), kern.union_bits(rows))
        a, b = got["never"], got["always"]
        assert_same(a[0], b[0])
        assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
        assert (a[3] is None and b[3] is None) or np.array_equal(a[3], b[3])


def test_compiled_loops_load_after_warm_calls(monkeypatch):
    """auto mode: numpy for the first WARM_CALLS kernels of a process, the loops after; never
    and always do what they say."""
    monkeypatch.setattr(_jit, "AVAILABLE", True)
    monkeypatch.setattr(_jit, "_loaded", False)
    monkeypatch.setattr(_jit, "_calls", 0)
    monkeypatch.setattr(_jit, "WARM_CALLS", 3)
    with jit_mode("auto"):
        assert [_jit.active() for _ in range(5)] == [False, False, False, True, True]
    with jit_mode("never"):
        assert not _jit.active()
    with jit_mode("always"):
        assert _jit.active()
    monkeypatch.setattr(_jit, "AVAILABLE", False)
    with jit_mode("always"):
        assert not _jit.active()  # without numba the numpy code runs
