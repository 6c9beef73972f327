"""MaskSets (``sepl.masks.base``) as stored ``fo.Detections`` documents, and the
per-image job for CPU mask sources run on all cores (no FiftyOne)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import numpy as np

from ..errors import SeplError
from . import raw


def mask_set_doc(ms, label: str = "mask", labels: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The ``fo.Detections`` document of a MaskSet: one detection per mask (cropped to its
    box), ``confidence`` = predicted IoU, and ``area``, ``predicted_iou``,
    ``stability_score``, ``source`` (and ``level`` when present) on each."""
    attrs: Dict[str, Any] = {
        "area": ms.area.astype(int).tolist(),
        "predicted_iou": [None if np.isnan(v) else float(v) for v in ms.predicted_iou],
        "stability_score": [None if np.isnan(v) else float(v) for v in ms.stability_score],
        "source": [ms.source] * len(ms),
    }
    if "level" in ms.fields:
        attrs["level"] = ms["level"].astype(int).tolist()
    scores = None if np.isnan(ms.predicted_iou).all() else np.nan_to_num(ms.predicted_iou)
    doc = raw.detections_doc(ms.masks, label=label, scores=scores, attributes=attrs)
    if labels is not None:
        for d, name in zip(doc["detections"], labels):
            d["label"] = name
    return doc


def load_row_image(row: Dict[str, Any]) -> np.ndarray:
    """The (H, W, 3) uint8 RGB image of a row; SeplError when it cannot be read."""
    from ..labelio import read_image

    try:
        return read_image(row["filepath"])
    except SeplError as e:
        raise SeplError(e.message, hint=e.hint or "fix or remove the image")
    except Exception as e:
        raise SeplError(f"cannot read image: {e}", hint="fix or remove the image")


@dataclass(frozen=True)
class GenerateRow:
    """Decode a row's image and run a picklable CPU mask source on it (superpixels)."""

    source: Any
    field: str

    def __call__(self, row: Dict[str, Any]) -> Dict[str, Any]:
        return {self.field: mask_set_doc(self.source.generate(load_row_image(row)))}
