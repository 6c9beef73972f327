"""The mask-source interface and ``MaskSet``, the per-image result every source returns."""

from __future__ import annotations

import abc
from typing import Any, Dict, List, Sequence

import numpy as np


class MaskSet:
    """Class-agnostic masks of one image with aligned per-mask arrays.

    Fields (all of length N, filtered together):
      masks (np.ndarray): NxHxW bool.
      area (np.ndarray): N int64, pixels per mask.
      predicted_iou (np.ndarray): N float32, the model's quality estimate (NaN for non-SAM).
      stability_score (np.ndarray): N float32 (NaN when not computed).
      boxes (np.ndarray): Nx4 float32 XYXY pixel boxes (inclusive max, as SAM's).
      point_coords (np.ndarray): Nx2 float32 prompt point (NaN when none).
      crop_boxes (np.ndarray): Nx4 float32 XYXY crop each mask came from.
    Extra aligned arrays may be added (``level`` for superpixels). ``source`` names the
    producer ("sam_auto/vit_h", "superpixels (not SAM)", ...).
    """

    REQUIRED = ("masks",)

    def __init__(self, masks: np.ndarray, source: str = "", **fields: Any):
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 3:
            raise ValueError(f"masks must be NxHxW, got shape {masks.shape}")
        n = masks.shape[0]
        self.source = source
        self.fields: Dict[str, np.ndarray] = {"masks": masks}
        defaults = {
            "area": lambda: masks.sum((1, 2)).astype(np.int64),
            "predicted_iou": lambda: np.full(n, np.nan, np.float32),
            "stability_score": lambda: np.full(n, np.nan, np.float32),
            "boxes": lambda: masks_to_boxes(masks),
            "point_coords": lambda: np.full((n, 2), np.nan, np.float32),
            "crop_boxes": lambda: np.tile(np.array([0, 0, masks.shape[2], masks.shape[1]], np.float32), (n, 1)),
        }
        for k, v in fields.items():
            v = np.asarray(v)
            if len(v) != n:
                raise ValueError(f"field {k} has length {len(v)}, masks have {n}")
            self.fields[k] = v
        for k, make in defaults.items():
            if k not in self.fields:
                self.fields[k] = make()

    def __len__(self) -> int:
        return self.fields["masks"].shape[0]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.fields[key]

    def __getattr__(self, key: str) -> np.ndarray:
        fields = self.__dict__.get("fields")
        if fields is not None and key in fields:
            return fields[key]
        raise AttributeError(key)

    @property
    def shape(self):
        return self.fields["masks"].shape[1:]

    def filter(self, keep: np.ndarray) -> "MaskSet":
        """A new MaskSet with the masks selected by a bool mask or index array."""
        keep = np.asarray(keep)
        return MaskSet(source=self.source, **{k: v[keep] for k, v in self.fields.items()})

    def records(self) -> List[Dict[str, Any]]:
        """Per-mask metadata (no masks), in the columns of segment-anything's ``amg.py``."""
        out = []
        for k in range(len(self)):
            x0, y0, x1, y1 = (float(v) for v in self.fields["boxes"][k])
            cx0, cy0, cx1, cy1 = (float(v) for v in self.fields["crop_boxes"][k])
            px, py = (float(v) for v in self.fields["point_coords"][k])
            out.append({
                "id": k, "area": int(self.fields["area"][k]),
                "bbox_x0": x0, "bbox_y0": y0, "bbox_w": x1 - x0, "bbox_h": y1 - y0,
                "point_input_x": px, "point_input_y": py,
                "predicted_iou": float(self.fields["predicted_iou"][k]),
                "stability_score": float(self.fields["stability_score"][k]),
                "crop_box_x0": cx0, "crop_box_y0": cy0, "crop_box_w": cx1 - cx0, "crop_box_h": cy1 - cy0,
            })
        return out

    @staticmethod
    def empty(height: int, width: int, source: str = "") -> "MaskSet":
        return MaskSet(np.zeros((0, height, width), bool), source=source)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Nx4 float32 XYXY boxes (inclusive max, zeros for empty masks) of NxHxW bool masks."""
    n, h, w = masks.shape
    rows, cols = masks.any(2), masks.any(1)
    has = rows.any(1)
    y0 = np.where(has, rows.argmax(1), 0)
    y1 = np.where(has, h - 1 - rows[:, ::-1].argmax(1), 0)
    x0 = np.where(has, cols.argmax(1), 0)
    x1 = np.where(has, w - 1 - cols[:, ::-1].argmax(1), 0)
    return np.stack([x0, y0, x1, y1], 1).astype(np.float32)


class MaskSource(abc.ABC):
    """Produces class-agnostic masks for images.

    ``name`` is stored with the masks; ``is_sam`` is False for classical sources so no one
    mistakes their regions for SAM's.
    """

    name: str = "masks"
    is_sam: bool = True

    @abc.abstractmethod
    def generate(self, image: np.ndarray) -> MaskSet:
        """Masks of one (H, W, 3) uint8 RGB image."""

    def generate_batch(self, images: Sequence[np.ndarray]) -> List[MaskSet]:
        """Masks of several images; sources that batch on the device override this."""
        return [self.generate(im) for im in images]

    @abc.abstractmethod
    def config(self) -> Dict[str, Any]:
        """JSON-serialisable parameters: what a run records and a resume must match."""


def mask_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NxM float32 IoU between the masks of two NxHxW / MxHxW bool stacks (one matmul)."""
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0).astype(np.float32)


def matched_fraction(a: np.ndarray, b: np.ndarray, thresh: float = 0.99) -> float:
    """Fraction of masks in ``a`` and ``b`` that have a partner of IoU >= ``thresh`` in the other."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    if len(a) == 0 or len(b) == 0:
        return 0.0
    iou = mask_iou_matrix(a, b)
    return float(((iou.max(1) >= thresh).sum() + (iou.max(0) >= thresh).sum()) / (len(a) + len(b)))
