"""One sample of the field importers (seeds PNGs, CAM dicts, SAM mask folders), on rows.

Each job is a picklable value called on a row (``sepl.labels.rows``) that returns the
document to store, so ``sepl.fo.importers`` decodes files on all cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..classes import IGNORE_INDEX
from ..errors import SeplError
from . import raw
from .rows import label_doc, row_shape


def check_values(label: np.ndarray, num_classes: int, what: str) -> None:
    """SeplError when ``label`` holds class indices >= ``num_classes`` (255 allowed)."""
    counts = np.bincount(label.ravel(), minlength=256) if label.dtype == np.uint8 else None
    values = np.flatnonzero(counts) if counts is not None else np.unique(label)
    bad = [int(v) for v in values if v >= num_classes and v != IGNORE_INDEX]
    if bad:
        raise SeplError(f"{what} holds class indices {bad[:10]} outside the {num_classes} mask targets",
                        hint="import with the right class list (--classes) or fix the file")


def _stem(row: Dict[str, Any]) -> str:
    return Path(row["filepath"]).stem


@dataclass(frozen=True)
class SeedFiles:
    """``<folder>/<image stem>.png`` label maps -> ``field``."""

    folder: str
    field: str
    num_classes: int
    disk_dir: Optional[str] = None

    def __call__(self, row: Dict[str, Any]) -> Dict[str, Any]:
        from ..labelio import find_file, read_label

        folder = Path(self.folder)
        path = find_file(folder, _stem(row), (".png",))
        if path is None:
            raise SeplError(f"no {_stem(row)}.png in {folder}")
        label = read_label(path)
        h, w = row_shape(row)
        if label.shape != (h, w):
            raise SeplError(f"{path.name} is {label.shape[1]}x{label.shape[0]} but the image is {w}x{h}",
                            hint="export the seeds at the image's size")
        check_values(label, self.num_classes, path.name)
        return {self.field: label_doc(label, self.disk_dir, row["id"])}


@dataclass(frozen=True)
class CamFiles:
    """``<folder>/<image stem>.npy`` CAM dicts -> seed label maps in ``field``."""

    folder: str
    field: str
    num_classes: int
    bg_threshold: Optional[float] = None
    bg_power: Optional[float] = None
    disk_dir: Optional[str] = None

    def __call__(self, row: Dict[str, Any]) -> Dict[str, Any]:
        from .cams import cam_to_label

        folder = Path(self.folder)
        path = folder / f"{_stem(row)}.npy"
        if not path.exists():
            raise SeplError(f"no {path.name} in {folder}")
        from ..safeload import load_npy

        data = load_npy(path)  # pickled CAM dicts through a restricted unpickler: no code runs
        label = cam_to_label(data, row_shape(row), self.bg_threshold, self.bg_power)
        check_values(label, self.num_classes, path.name)
        return {self.field: label_doc(label, self.disk_dir, row["id"])}


def mask_scores(meta: List[dict]):
    """Per-mask score (``predicted_iou``) and numeric attributes from amg metadata rows."""
    scores, attrs = None, {}
    if not meta:
        return scores, attrs
    for name in ("predicted_iou", "stability_score", "area"):
        vals = [m.get(name) for m in meta]
        try:
            vals = [float(v) for v in vals]
        except (TypeError, ValueError):
            continue
        if name == "predicted_iou":
            scores = vals
        else:
            attrs[name] = vals
    return scores, attrs


@dataclass(frozen=True)
class MaskFiles:
    """``<folder>/<stem>/`` (amg.py layout) or ``<folder>/<stem>.json`` (COCO RLE) -> a
    ``fo.Detections`` document in ``field``."""

    folder: str
    field: str

    def __call__(self, row: Dict[str, Any]) -> Dict[str, Any]:
        from .. import amgio

        folder = Path(self.folder)
        stem = _stem(row)
        sub, js = folder / stem, folder / f"{stem}.json"
        h, w = row_shape(row)
        try:
            if sub.is_dir():
                masks, meta = amgio.read_amg_folder(sub, shape=(h, w))
            elif js.exists():
                masks, meta = amgio.read_rle_json(js, shape=(h, w))
            else:
                raise SeplError(f"neither {stem}/ nor {stem}.json in {folder}")
        except SeplError:
            raise
        except Exception as e:
            raise SeplError(f"cannot read the masks of {stem}: {e}", hint="recompute or re-export them")
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 3 or masks.shape[1:] != (h, w):
            raise SeplError(f"masks are {masks.shape[-1]}x{masks.shape[-2]} but the image is {w}x{h}",
                            hint="compute the masks on the original image size")
        scores, attrs = mask_scores(list(meta or []))
        return {self.field: raw.detections_doc(masks, scores=scores, attributes=attrs)}
