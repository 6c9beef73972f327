"""Painting box-prompted masks into one semantic label map.

Each detection k brings a boolean mask, a class index and a detector score. Where masks
overlap, a rule decides the class:

- ``"reference"``: paint in detection order, the last writer wins (wsss_sam). The order is
  the detector's query order, which carries no meaning, so overlaps are settled by chance.
- ``"score"``: the highest detector score wins each pixel.
- ``"area"`` (default): the smallest mask wins each pixel, so an object lying on or in front
  of a larger one (a bottle on a table, a rider on a horse) keeps its own class; masks that
  are near-duplicates of a higher-scored mask of another class (the same object found under
  two phrases) are dropped first, so the score decides between rival names for one object.

``ignore_conflicts`` marks pixels claimed by two or more classes ``ignore_index`` instead,
for training losses that skip them. Measured on real VOC geometry in
``benchmarks/bench_grounded_paint.py``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..errors import SeplError

RULES = ("reference", "score", "area")
DEFAULT_RULE = "area"


def mask_iou(masks: np.ndarray) -> np.ndarray:
    """(K, K) float64 IoU between the masks of a (K, H, W) bool stack."""
    flat = masks.reshape(len(masks), -1).astype(np.float32)
    inter = flat @ flat.T
    area = flat.sum(1)
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float64)


def dedup_across_classes(masks: np.ndarray, class_ids: np.ndarray, scores: np.ndarray,
                         iou_thresh: float) -> np.ndarray:
    """(K,) bool keep-flags: drop a mask whose IoU with a higher-scored mask of another class
    is at least ``iou_thresh`` (greedy, by decreasing score)."""
    k = len(masks)
    keep = np.ones(k, bool)
    if k < 2 or iou_thresh is None or iou_thresh > 1:
        return keep
    iou = mask_iou(masks)
    for i in np.argsort(-scores, kind="stable"):
        if not keep[i]:
            continue
        rivals = (class_ids != class_ids[i]) & (iou[i] >= iou_thresh) & keep
        rivals[i] = False
        # only lower-scored rivals go: i is visited in decreasing score order
        keep[rivals & (np.arange(k) != i)] = False
    return keep


def paint_order(class_ids: np.ndarray, scores: Optional[np.ndarray], areas: np.ndarray, rule: str) -> np.ndarray:
    """Indices in painting order (the last painted wins) for ``rule``."""
    k = len(class_ids)
    if rule == "reference":
        return np.arange(k)
    if rule == "score":
        if scores is None:
            raise SeplError("the 'score' painting rule needs detection scores")
        return np.argsort(scores, kind="stable")
    if rule == "area":
        return np.argsort(-areas, kind="stable")
    raise SeplError(f"unknown painting rule '{rule}'", hint=f"use one of {RULES}")


def paint_label_map(
    masks: np.ndarray,
    class_ids: Sequence[int],
    scores: Optional[Sequence[float]] = None,
    shape: Optional[tuple] = None,
    rule: str = DEFAULT_RULE,
    dedup_iou: Optional[float] = 0.8,
    ignore_conflicts: bool = False,
    ignore_index: int = 255,
) -> np.ndarray:
    """Label map from class-labelled masks.

    Args:
        masks: (K, H, W) bool, one mask per detection, in detection order.
        class_ids: (K,) class index of each mask (1..C-1).
        scores: (K,) detector scores (needed by ``"score"`` and by ``dedup_iou``).
        shape: (H, W), needed when K == 0.
        rule: ``"reference"``, ``"score"`` or ``"area"`` (see the module docstring).
        dedup_iou: for ``"area"``, drop masks with at least this IoU with a higher-scored
            mask of another class; None turns it off.
        ignore_conflicts: pixels covered by masks of two or more classes get ``ignore_index``.

    Returns:
        (H, W) uint8: 0 background, class indices elsewhere (``ignore_index`` on conflicts).
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        if shape is None or masks.size:
            raise SeplError(f"masks must be a (K, H, W) stack, got shape {masks.shape}")
        masks = np.zeros((0,) + tuple(shape), bool)
    class_ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
    if len(class_ids) != len(masks):
        raise SeplError(f"{len(masks)} masks but {len(class_ids)} class ids")
    h, w = masks.shape[1:] if len(masks) or shape is None else shape
    out = np.zeros((h, w), np.uint8)
    if len(masks) == 0:
        return out
    if class_ids.min() < 1 or class_ids.max() > 254:
        raise SeplError(f"class ids must be in 1..254, got {class_ids.min()}..{class_ids.max()}")
    sc = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    keep = np.ones(len(masks), bool)
    if rule == "area" and dedup_iou is not None and sc is not None:
        keep = dedup_across_classes(masks, class_ids, sc, dedup_iou)
    areas = masks.reshape(len(masks), -1).sum(1)
    for k in paint_order(class_ids, sc, areas, rule):
        if keep[k]:
            out[masks[k]] = class_ids[k]
    if ignore_conflicts:
        present = np.unique(class_ids[keep])
        per_class = np.zeros((h, w), np.uint8)
        for c in present:
            per_class += np.any(masks[keep & (class_ids == c)], axis=0).astype(np.uint8)
        out[per_class >= 2] = ignore_index
    return out
