"""One sample of ``sepl.fo.evaluate`` on rows: decode both label maps, check, count.

``ScorePair(...)(row)`` returns the sample's (C, C+1) count matrix (see
``sepl.metrics.ConfusionMatrix``), or raises SeplError naming the problem; a picklable job,
so evaluation runs on all cores with the same counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..classes import IGNORE_INDEX
from ..errors import SeplError
from ..metrics import ConfusionMatrix, pair_counts, pair_matrix
from . import raw


def stored_map(doc: Optional[dict]) -> Optional[np.ndarray]:
    """The label map of a stored ``fo.Segmentation`` document, None when there is none."""
    if doc is None:
        return None
    if doc.get("mask") is not None:
        m = raw.decode_array(doc["mask"])
    elif doc.get("mask_path"):
        from ..labelio import read_label

        m = read_label(doc["mask_path"])
    else:
        return None
    return m[..., 0] if m.ndim == 3 else m


def unknown_classes(pred_field: str, values, num_classes: int) -> str:
    return f"'{pred_field}' holds classes {list(values)[:10]} not in the {num_classes} mask targets"


def check_pair(gt, pred, gt_field: str, pred_field: str, num_classes: int,
               ignore_index: int = IGNORE_INDEX) -> Optional[str]:
    """Why a (GT, prediction) pair cannot be scored, or None."""
    if gt is None:
        return f"no ground truth in '{gt_field}'"
    if pred is None:
        return f"no prediction in '{pred_field}'"
    if gt.shape != pred.shape:
        return (f"'{pred_field}' is {pred.shape[1]}x{pred.shape[0]} but '{gt_field}' is "
                f"{gt.shape[1]}x{gt.shape[0]} (masks are never resized: recompute the prediction)")
    if pred.size and int(pred.max()) >= num_classes:  # rare: then find which values (no sort)
        counts = np.bincount(pred.ravel().astype(np.int64))
        bad = [int(v) for v in np.flatnonzero(counts) if v >= num_classes and v != ignore_index]
        if bad:
            return unknown_classes(pred_field, bad, num_classes)
    return None


@dataclass(frozen=True)
class ScorePair:
    """Counts of ``pred_field`` against ``gt_field`` for one row."""

    pred_field: str
    gt_field: str
    num_classes: int
    ignore_index: int = IGNORE_INDEX
    pred_lut: Optional[np.ndarray] = None  # prediction value -> GT class (match by name)

    def __call__(self, row: Dict[str, Any]) -> np.ndarray:
        gt = stored_map(row["fields"].get(self.gt_field))
        pred = stored_map(row["fields"].get(self.pred_field))
        if gt is not None and pred is not None and gt.shape == pred.shape \
                and gt.dtype == np.uint8 and pred.dtype == np.uint8:
            return self._from_pairs(*pair_counts(gt, pred))
        lut = self.pred_lut
        if lut is not None and pred is not None and pred.size and int(pred.max()) < len(lut):
            pred = lut[pred].astype(pred.dtype, copy=False)  # values beyond the table: check_pair reports them
        problem = check_pair(gt, pred, self.gt_field, self.pred_field, self.num_classes, self.ignore_index)
        if problem:
            raise SeplError(problem)
        cm = ConfusionMatrix(num_classes=self.num_classes, ignore_index=self.ignore_index)
        try:
            cm.update(pred, gt)
        except SeplError as e:  # GT values outside the classes
            raise SeplError(f"'{self.gt_field}': {e.message}")
        return cm._m

    def _from_pairs(self, codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """uint8 maps (PNG-like, the common case): every check and count from one pass over
        the pixels, the distinct (GT, prediction) pairs."""
        if self.pred_lut is not None:
            codes = (codes & ~255) | self.pred_lut[codes & 255]
        c = self.num_classes
        pred = codes & 255
        bad = sorted({v for v in pred[pred >= c].tolist() if v != self.ignore_index})
        if bad:
            raise SeplError(unknown_classes(self.pred_field, bad, c))
        try:
            return pair_matrix(codes, counts, c, self.ignore_index)
        except SeplError as e:  # GT values outside the classes
            raise SeplError(f"'{self.gt_field}': {e.message}")


def sample_scores(counts: np.ndarray, num_classes: int) -> Tuple[float, Dict[int, float], np.ndarray]:
    """One sample's figures from its (C, C+1) counts: (mIoU over the classes present in its GT
    or prediction, NaN if none; {class: IoU} of those classes; (K, 3) int64 [GT class,
    predicted class, pixels] of its non-zero (C, C) cells), as ``ConfusionMatrix``."""
    m = counts[:, :num_classes]
    tp = np.diagonal(m)
    union = counts.sum(1) + m.sum(0) - tp
    present = np.flatnonzero(union > 0)
    iou = tp[present] / union[present]
    cells = np.argwhere(m)
    cells = np.column_stack([cells, m[cells[:, 0], cells[:, 1]]])
    miou = float(iou.mean()) if present.size else float("nan")
    return miou, dict(zip(present.tolist(), iou.tolist())), cells
