"""Scoring label maps: the WSSS community's pseudo-label mIoU, per-sample mIoU, boundary F.

``ConfusionMatrix`` accumulates one matrix over a whole image list (GT ``ignore_index``
skipped) and gives the dataset mIoU papers report: IoU_c = TP / (GT_c + Pred_c - TP) averaged
over all C classes, background included. Prediction values outside 0..C-1 (e.g. a 255 left
in a pseudo-label) count as "no class": a miss for the GT class, a hit for none.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import SeplError


def _as_numpy(x: Any) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


_scratch = threading.local()


def _bool_scratch(n: int) -> np.ndarray:
    """A reused (n,) bool buffer of this thread: large temporaries cost page faults per call
    (fresh memory from the OS), more than the comparisons that fill them."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.size < n:
        buf = _scratch.buf = np.empty(max(n, 1 << 18), bool)
    return buf[:n]


def pair_counts(gt: np.ndarray, pred: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The (GT, prediction) value pairs of two uint8 maps of one shape and their pixel counts:
    ``(codes, counts)``, (U,) int64 each, codes ``gt << 8 | pred`` ascending and distinct.

    Label maps are piecewise constant: pairs are counted per run of equal pairs along the
    flattened maps (a few thousand runs on a 375x500 VOC image instead of 187,500 pixels),
    2.5-4x faster than a bincount of every pixel (``benchmarks/bench_scoring.py``); the
    whole-array ufuncs release the GIL, so evaluation scores on threads. Maps with many short
    runs are counted per pixel.
    """
    g, p = gt.reshape(-1), pred.reshape(-1)
    n = g.size
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    scratch = _bool_scratch(2 * n)
    change = np.not_equal(g[1:], g[:-1], out=scratch[:n - 1])
    other = np.not_equal(p[1:], p[:-1], out=scratch[n:2 * n - 1])
    np.bitwise_or(change, other, out=change)
    starts = np.flatnonzero(change)
    if starts.size > n // 8:  # noisy maps: runs would cost more than they save
        h = np.bincount((g.astype(np.int64) << 8) | p, minlength=65536)
        codes = np.flatnonzero(h)
        return codes, h[codes]
    starts += 1
    first = np.concatenate(([0], starts))
    lengths = np.diff(first, append=n)
    gv, pv = g[first], p[first]
    # count in the dense space of the values present (a few of 256 each): no sort, and no
    # 65536-cell histogram to allocate and scan
    g_vals, p_vals = _present(gv), _present(pv)
    g_idx, p_idx = np.zeros(256, np.intp), np.zeros(256, np.intp)
    g_idx[g_vals] = np.arange(g_vals.size)
    p_idx[p_vals] = np.arange(p_vals.size)
    dense = np.bincount(g_idx[gv] * p_vals.size + p_idx[pv], weights=lengths, minlength=g_vals.size * p_vals.size)
    cells = np.flatnonzero(dense)
    codes = (g_vals[cells // p_vals.size] << 8) | p_vals[cells % p_vals.size]
    return codes, dense[cells].astype(np.int64)


def _present(values: np.ndarray) -> np.ndarray:
    """(V,) int64 ascending distinct values of a uint8 array."""
    seen = np.zeros(256, bool)
    seen[values] = True
    return np.flatnonzero(seen)


def pair_matrix(codes: np.ndarray, counts: np.ndarray, num_classes: int, ignore_index: int,
                name=None) -> np.ndarray:
    """The (C, C+1) int64 counts of ``_counts`` from ``pair_counts``' output: GT pixels of
    ``ignore_index`` left out, predictions outside 0..C-1 in column C; a SeplError for GT
    values outside 0..C-1."""
    c = num_classes
    g, p = codes >> 8, codes & 255
    keep = g != ignore_index
    g, p, counts = g[keep], p[keep], counts[keep]
    if g.size and int(g[-1]) >= c:  # codes ascend, so the largest GT value is last
        bad = np.unique(g[g >= c])
        raise SeplError(f"ground truth has values {bad[:10].tolist()} outside 0..{c - 1} (ignore {ignore_index})",
                        hint="pass the right --num-classes / ignore_index", sample=name)
    p = np.minimum(p, c)
    return np.bincount(g * (c + 1) + p, weights=counts, minlength=c * (c + 1)).astype(np.int64).reshape(c, c + 1)


def _counts(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int, name=None) -> np.ndarray:
    """(C, C+1) counts of (gt, pred) pairs over the non-ignored pixels; column C holds
    predictions outside 0..C-1."""
    if pred.shape != gt.shape:
        raise SeplError(f"prediction is {pred.shape} but ground truth is {gt.shape}",
                        hint="both label maps must come from the same image size", sample=name)
    c = num_classes
    if gt.dtype == np.uint8 and pred.dtype == np.uint8:
        # fast path for PNG label maps: counted per run of equal (gt, pred) pairs
        return pair_matrix(*pair_counts(gt, pred), c, ignore_index, name)
    gt = gt.reshape(-1)
    pred = pred.reshape(-1)
    valid = gt != ignore_index
    g = gt[valid].astype(np.int64)
    if g.size and (g.min() < 0 or g.max() >= c):
        bad = sorted(set(np.unique(g[(g < 0) | (g >= c)]).tolist()))
        raise SeplError(f"ground truth has values {bad[:10]} outside 0..{c - 1} (ignore {ignore_index})",
                        hint="pass the right --num-classes / ignore_index", sample=name)
    p = pred[valid].astype(np.int64)
    p[(p < 0) | (p >= c)] = c
    return np.bincount(g * (c + 1) + p, minlength=c * (c + 1)).reshape(c, c + 1)


class ConfusionMatrix:
    """Accumulates a (C, C) confusion matrix over label maps; rows = GT, columns = prediction.

    Args:
        num_classes: C, including background (21 for VOC, 81 for COCO).
        ignore_index: the GT value that is not scored (VOC's 255 boundary).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if num_classes < 1:
            raise SeplError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        # an extra column holds pixels predicted outside 0..C-1
        self._m = np.zeros((self.num_classes, self.num_classes + 1), np.int64)

    def update(self, pred: Any, gt: Any, name: Optional[str] = None) -> "ConfusionMatrix":
        """Add one (H, W) prediction / ground-truth pair (numpy or torch integer arrays)."""
        self._m += _counts(_as_numpy(pred), _as_numpy(gt), self.num_classes, self.ignore_index, name)
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another accumulator's counts (e.g. from a worker process)."""
        if other.num_classes != self.num_classes:
            raise SeplError("cannot add confusion matrices with different num_classes")
        self._m += other._m
        return self

    def reset(self) -> None:
        self._m[:] = 0

    @property
    def matrix(self) -> np.ndarray:
        """(C, C) int64 counts, rows = ground truth, columns = prediction."""
        return self._m[:, : self.num_classes].copy()

    @property
    def gt_counts(self) -> np.ndarray:
        """(C,) pixels of each GT class (including those predicted outside 0..C-1)."""
        return self._m.sum(1)

    @property
    def pred_counts(self) -> np.ndarray:
        """(C,) pixels predicted as each class (over non-ignored GT pixels)."""
        return self._m[:, : self.num_classes].sum(0)

    @property
    def true_positives(self) -> np.ndarray:
        return np.diagonal(self._m[:, : self.num_classes]).copy()

    def iou(self) -> np.ndarray:
        """(C,) float64 per-class IoU; NaN for a class absent from both GT and prediction."""
        tp = self.true_positives
        union = self.gt_counts + self.pred_counts - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self, nan_as_zero: bool = False) -> float:
        """Mean IoU over the C classes (the published figure; every VOC/COCO class occurs in
        their train lists). A class absent from both GT and prediction has no IoU: it is
        skipped (``np.nanmean``, as the common WSSS evaluation scripts) or, with
        ``nan_as_zero``, counted as 0."""
        iou = self.iou()
        if nan_as_zero:
            return float(np.nan_to_num(iou, nan=0.0).mean())
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def precision(self) -> np.ndarray:
        """(C,) TP / predicted pixels; NaN where nothing was predicted."""
        with np.errstate(divide="ignore", invalid="ignore"):
            p = self.pred_counts
            return np.where(p > 0, self.true_positives / np.maximum(p, 1), np.nan)

    def recall(self) -> np.ndarray:
        """(C,) TP / GT pixels; NaN where the class never occurs in GT."""
        with np.errstate(divide="ignore", invalid="ignore"):
            g = self.gt_counts
            return np.where(g > 0, self.true_positives / np.maximum(g, 1), np.nan)

    def pixel_accuracy(self) -> float:
        total = self._m.sum()
        return float(self.true_positives.sum() / total) if total else float("nan")

    def present_miou(self) -> float:
        """Mean IoU over the classes present in GT or prediction (NaN if none): the per-sample
        figure when the matrix holds one image."""
        tp = self.true_positives
        union = self.gt_counts + self.pred_counts - tp
        present = union > 0
        return float((tp[present] / union[present]).mean()) if present.any() else float("nan")

    def summary(self, class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """A JSON-ready dict: miou, pixel_accuracy and per-class iou/precision/recall/gt/pred."""
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        iou, prec, rec = self.iou(), self.precision(), self.recall()

        def num(x):
            return None if not np.isfinite(x) else float(x)

        per_class: List[Dict[str, Any]] = [
            dict(id=i, name=names[i] if i < len(names) else str(i), iou=num(iou[i]), precision=num(prec[i]),
                 recall=num(rec[i]), gt_pixels=int(self.gt_counts[i]), pred_pixels=int(self.pred_counts[i]))
            for i in range(self.num_classes)
        ]
        return dict(miou=self.miou(), pixel_accuracy=num(self.pixel_accuracy()), num_classes=self.num_classes,
                    ignore_index=self.ignore_index, classes=per_class)


def per_sample_miou(pred: Any, gt: Any, num_classes: int, ignore_index: int = 255) -> float:
    """Mean IoU over the classes present in this image's GT or prediction (GT ignore skipped).

    Returns NaN when the image has no scored pixel. A finding-bad-samples figure, not the
    dataset mIoU (use ``ConfusionMatrix`` for that).
    """
    return ConfusionMatrix(num_classes, ignore_index).update(pred, gt).present_miou()


def boundary_fscore(pred: Any, gt: Any, tolerance: int = 2, ignore_index: int = 255,
                    num_classes: Optional[int] = None) -> Dict[str, float]:
    """Contour F-score of label-map boundaries with a ``tolerance``-pixel band (DAVIS-style F).

    A boundary pixel is one whose 4-neighbour differs in label. Precision = the fraction of
    predicted boundary pixels within ``tolerance`` of a GT boundary, recall the converse;
    both skip GT ``ignore_index`` pixels (VOC's void band sits on the boundary, so with
    VOC the GT boundary is the edge of the 255 band: it is dilated by the band width).

    Returns dict(precision, recall, f) (NaN where undefined).
    """
    import cv2

    p = _as_numpy(pred).astype(np.int32)
    g = _as_numpy(gt).astype(np.int32)
    if p.shape != g.shape:
        raise SeplError(f"prediction is {p.shape} but ground truth is {g.shape}")
    ign = g == ignore_index
    if ign.any():
        # void pixels take their nearest labelled neighbour so the GT boundary runs through the band
        src = (~ign).astype(np.uint8)
        _, labels = cv2.distanceTransformWithLabels(1 - src, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        ys, xs = np.nonzero(src)
        lut = np.zeros(labels.max() + 1, np.int32)
        lut[labels[ys, xs]] = g[ys, xs]
        g = np.where(ign, lut[labels], g)
    pb = _boundary(p)
    gb = _boundary(g)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
    gd = cv2.dilate(gb.astype(np.uint8), k).astype(bool)
    pd = cv2.dilate(pb.astype(np.uint8), k).astype(bool)
    np_, ng = int(pb.sum()), int(gb.sum())
    prec = float((pb & gd).sum() / np_) if np_ else float("nan")
    rec = float((gb & pd).sum() / ng) if ng else float("nan")
    if np_ == 0 and ng == 0:
        return dict(precision=1.0, recall=1.0, f=1.0)
    if not (np.isfinite(prec) and np.isfinite(rec)) or prec + rec == 0:
        f = 0.0
    else:
        f = 2 * prec * rec / (prec + rec)
    return dict(precision=prec, recall=rec, f=f)


def _boundary(label: np.ndarray) -> np.ndarray:
    b = np.zeros(label.shape, bool)
    b[:, :-1] |= label[:, :-1] != label[:, 1:]
    b[:-1, :] |= label[:-1, :] != label[1:, :]
    return b
