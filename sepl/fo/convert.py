"""FiftyOne labels <-> numpy arrays.

Conventions:
- semantic label maps (GT, seeds, merged labels) are ``fo.Segmentation`` with an (H, W)
  uint8 mask (0 background, 1..C-1 classes, 255 ignore) and mask targets on the dataset;
- class-agnostic masks are ``fo.Detections``; each ``fo.Detection`` holds a boolean
  mask cropped to its integer-pixel bounding box (FiftyOne's instance-mask convention),
  so a round trip through the database is exact;
- image-level labels are ``fo.Classifications`` (a single ``fo.Classification`` and a
  list of strings are accepted too).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

import fiftyone as fo

from ..errors import SeplError


def sample_name(sample) -> str:
    """How errors refer to a sample: its file name and id."""
    return f"{os.path.basename(sample.filepath)} ({sample.id})"


def _get_field(sample, field: str, what: str, hint: str):
    if not sample.has_field(field) and not sample._dataset.has_field(field):
        raise SeplError(f"the dataset has no field '{field}'", hint=hint, sample=sample_name(sample))
    value = sample[field]
    if value is None:
        raise SeplError(f"field '{field}' holds no {what}", hint=hint, sample=sample_name(sample))
    return value


def image_shape(sample) -> Tuple[int, int]:
    """(height, width) of the sample's image, from its metadata or, failing that, the file."""
    md = sample.metadata
    if md is not None and getattr(md, "height", None) and getattr(md, "width", None):
        return int(md.height), int(md.width)
    from PIL import Image

    try:
        with Image.open(sample.filepath) as im:
            w, h = im.size
    except (OSError, ValueError) as e:
        raise SeplError(f"cannot read image: {e}", hint="fix or remove the file", sample=sample_name(sample))
    return h, w


def load_label_map(sample, field: str, shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """The (H, W) label map of ``sample[field]`` (a ``fo.Segmentation``).

    ``shape``, when given, is checked: a label map of another size is an error, since
    resizing class indices silently would corrupt the scores.
    """
    seg = _get_field(sample, field, "segmentation",
                     hint=f"compute or import '{field}' for this sample first, or pick another field")
    if not isinstance(seg, fo.Segmentation):
        raise SeplError(f"field '{field}' is a {type(seg).__name__}, not a Segmentation",
                        hint="choose a semantic-segmentation field", sample=sample_name(sample))
    try:
        mask = seg.get_mask()
    except Exception as e:
        raise SeplError(f"cannot load the mask of '{field}': {e}",
                        hint="the mask file is missing or corrupt; recompute the field", sample=sample_name(sample))
    if mask is None:
        raise SeplError(f"field '{field}' has no mask", hint="recompute the field", sample=sample_name(sample))
    mask = np.asarray(mask)
    if mask.ndim == 3:  # RGB-rendered masks: keep the first channel only if all agree
        if not (np.all(mask[..., 0] == mask[..., 1]) and np.all(mask[..., 0] == mask[..., 2])):
            raise SeplError(f"field '{field}' holds an RGB mask", hint="store class indices, not colours",
                            sample=sample_name(sample))
        mask = mask[..., 0]
    if shape is not None and tuple(mask.shape) != tuple(shape):
        raise SeplError(f"'{field}' is {mask.shape[1]}x{mask.shape[0]} but the image is {shape[1]}x{shape[0]}",
                        hint="recompute the label map at the image's size", sample=sample_name(sample))
    return mask


def to_segmentation(label_map: np.ndarray, mask_path: Optional[str] = None) -> fo.Segmentation:
    """A ``fo.Segmentation`` for an (H, W) label map (values 0..255), stored in the database,
    or as a PNG at ``mask_path`` when given (written atomically)."""
    label_map = np.asarray(label_map)
    if label_map.dtype != np.uint8:
        if label_map.size and (label_map.min() < 0 or label_map.max() > 255):
            raise SeplError(f"label values {label_map.min()}..{label_map.max()} do not fit in uint8")
        label_map = label_map.astype(np.uint8)
    if mask_path is None:
        return fo.Segmentation(mask=label_map)
    from ..labelio import write_label

    write_label(mask_path, label_map, palette=False)
    return fo.Segmentation(mask_path=str(mask_path))


def masks_to_detections(
    masks: np.ndarray,
    label: str = "mask",
    scores: Optional[Sequence[float]] = None,
    attributes: Optional[Dict[str, Sequence[Any]]] = None,
) -> fo.Detections:
    """``fo.Detections`` for an (N, H, W) bool mask stack; empty masks are kept (zero box).

    ``scores`` become ``confidence``; each ``attributes[name][k]`` is set on detection k.
    """
    masks = np.asarray(masks, dtype=bool)
    n, h, w = masks.shape
    dets = []
    rows = masks.any(axis=2)
    cols = masks.any(axis=1)
    for k in range(n):
        ys, xs = np.flatnonzero(rows[k]), np.flatnonzero(cols[k])
        if len(ys):
            y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
        else:
            y0 = y1 = x0 = x1 = 0
        det = fo.Detection(
            label=label,
            bounding_box=[x0 / w, y0 / h, (x1 - x0) / w, (y1 - y0) / h],
            mask=masks[k, y0:y1, x0:x1].copy(),
        )
        if scores is not None:
            det.confidence = float(scores[k])
        for name, values in (attributes or {}).items():
            v = values[k]
            det[name] = v.item() if isinstance(v, np.generic) else v
        dets.append(det)
    return fo.Detections(detections=dets)


def detection_box_pixels(det: fo.Detection, height: int, width: int) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1) integer pixel box of a detection, clipped to the image."""
    x, y, bw, bh = det.bounding_box
    x0, y0 = int(round(x * width)), int(round(y * height))
    x1, y1 = int(round((x + bw) * width)), int(round((y + bh) * height))
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def detections_to_masks(dets: Optional[fo.Detections], height: int, width: int) -> np.ndarray:
    """The (N, H, W) bool stack of a ``fo.Detections``' instance masks, in stored order.

    A detection without a mask covers its whole box; a crop whose size does not match its
    box (written by other tools) is resized with nearest neighbour.
    """
    items = [] if dets is None else dets.detections
    out = np.zeros((len(items), height, width), dtype=bool)
    for k, det in enumerate(items):
        x0, y0, x1, y1 = detection_box_pixels(det, height, width)
        if x1 <= x0 or y1 <= y0:
            continue
        crop = det.get_mask() if hasattr(det, "get_mask") else det.mask
        if crop is None:
            out[k, y0:y1, x0:x1] = True
            continue
        crop = np.asarray(crop).astype(bool)
        if crop.shape != (y1 - y0, x1 - x0):
            import cv2

            crop = cv2.resize(crop.astype(np.uint8), (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST) > 0
        out[k, y0:y1, x0:x1] = crop
    return out


def load_masks(sample, field: str, shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """(N, H, W) bool stack of the class-agnostic masks in ``sample[field]``."""
    dets = _get_field(sample, field, "masks",
                      hint=f"generate or import masks into '{field}' for this sample first")
    if not isinstance(dets, fo.Detections):
        raise SeplError(f"field '{field}' is a {type(dets).__name__}, not Detections",
                        hint="choose a field of instance masks", sample=sample_name(sample))
    h, w = shape if shape is not None else image_shape(sample)
    return detections_to_masks(dets, h, w)


def image_labels(sample, field: str) -> List[str]:
    """Image-level class names from ``fo.Classifications``, ``fo.Classification`` or a list field."""
    value = _get_field(sample, field, "image-level labels",
                       hint=f"set '{field}' (fo.Classifications) for this sample, or pick another field")
    if isinstance(value, fo.Classifications):
        return [c.label for c in value.classifications]
    if isinstance(value, fo.Classification):
        return [value.label]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    raise SeplError(f"field '{field}' is a {type(value).__name__}, not image-level labels",
                    hint="use a Classifications field", sample=sample_name(sample))


def to_classifications(names: Iterable[str]) -> fo.Classifications:
    """``fo.Classifications`` holding one classification per class name."""
    return fo.Classifications(classifications=[fo.Classification(label=n) for n in names])


def get_mask_targets(dataset, field: str) -> Dict[int, str]:
    """Mask targets of ``field`` (field-specific first, else the dataset default), int keys."""
    targets = dataset.mask_targets.get(field) or dataset.default_mask_targets or {}
    return {int(k): v for k, v in targets.items()}


def set_mask_targets(dataset, field: str, targets: Dict[int, str]) -> None:
    """Record ``targets`` for ``field`` so the App names the classes; saves the dataset."""
    mt = dict(dataset.mask_targets)
    mt[field] = {int(k): v for k, v in targets.items()}
    dataset.mask_targets = mt
    dataset.save()


def mask_dir_for(dataset, field: str, root: Optional[str] = None) -> Path:
    """Folder for on-disk masks of ``field``: ``root`` or ``$SEPL_MASK_DIR`` or
    ``<fiftyone dataset dir>/sepl/<dataset name>/<field>``."""
    base = root or os.environ.get("SEPL_MASK_DIR")
    if base is None:
        base = os.path.join(fo.config.default_dataset_dir, "sepl", dataset.name)
    else:
        base = os.path.join(base, dataset.name)
    return Path(base) / field
