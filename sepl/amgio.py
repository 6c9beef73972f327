"""Class-agnostic mask sets on disk, in the layouts segment-anything's ``scripts/amg.py`` writes.

- Folder layout (``output_mode="binary_mask"``): one folder per image holding ``<k>.png``
  (single-channel 0/255, k = 0..N-1) and ``metadata.csv`` with the columns of ``AMG_COLUMNS``.
- JSON layout (``output_mode="coco_rle"``): one ``<image>.json`` per image, a list of SAM
  records whose ``"segmentation"`` is a COCO RLE (``{"size": [h, w], "counts": str}``).

Masks are returned as an (N, H, W) bool stack in the order of the mask index k, with one
metadata dict per mask (the CSV/JSON fields, numbers parsed).
"""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .errors import SeplError

PathLike = Union[str, os.PathLike]

AMG_COLUMNS = [
    "id", "area", "bbox_x0", "bbox_y0", "bbox_w", "bbox_h", "point_input_x", "point_input_y",
    "predicted_iou", "stability_score", "crop_box_x0", "crop_box_y0", "crop_box_w", "crop_box_h",
]
_MASK_NAME = re.compile(r"^(\d+)\.png$")


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def read_amg_folder(path: PathLike, shape: Optional[Tuple[int, int]] = None) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """Read one image's amg.py folder.

    ``shape`` (H, W), the image's size, gives an empty folder (SAM found no mask) its
    (0, H, W) stack; without it an empty set is (0, 0, 0).

    Returns:
        masks: (N, H, W) bool, ordered by the numeric file name (0.png, 1.png, ..., 10.png).
        meta: N dicts, the metadata.csv row of each mask (``{"id": k}`` alone when the CSV
            is absent or has no row for it).
    """
    path = Path(path)
    if not path.is_dir():
        raise SeplError(f"mask folder not found: {path}", hint="point --masks at amg.py's output folder",
                        sample=path.name)
    files = sorted(((int(m.group(1)), p) for p in path.iterdir() if (m := _MASK_NAME.match(p.name))))
    rows = _read_metadata(path / "metadata.csv")
    meta = [rows.get(k, {"id": k}) for k, _ in files]
    stack = None
    for j, (k, p) in enumerate(files):
        arr = _read_mask_png(p, path.name)
        if stack is None:
            stack = np.empty((len(files),) + arr.shape, bool)
        elif arr.shape != stack.shape[1:]:
            raise SeplError(f"mask {p.name} is {arr.shape[0]}x{arr.shape[1]}, "
                            f"others are {stack.shape[1]}x{stack.shape[2]}", sample=path.name)
        hi = arr.max()
        # 0/255 (amg.py) or 0/1; anything else is not a binary mask
        if hi not in (0, 1, 255) or (hi and np.count_nonzero(arr) != np.count_nonzero(arr == hi)):
            values = np.unique(arr)
            raise SeplError(f"mask {p.name} is not binary (values {values[:6].tolist()})",
                            hint="amg.py masks are 0/255 PNGs", sample=path.name)
        np.not_equal(arr, 0, out=stack[j])
    if stack is None:
        return _empty(shape), meta
    return stack, meta


def _empty(shape: Optional[Tuple[int, int]]) -> np.ndarray:
    return np.zeros((0,) + (tuple(int(v) for v in shape) if shape is not None else (0, 0)), bool)


def _read_mask_png(p: Path, sample: str) -> np.ndarray:
    import cv2

    arr = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)  # ~2x faster than PIL for these PNGs
    if arr is not None and arr.ndim == 2 and arr.dtype == np.uint8:
        return arr
    try:  # palette, colour or 16-bit PNGs, and a clear error for corrupt files
        with Image.open(p) as im:
            arr = np.asarray(im)
    except (OSError, ValueError) as e:
        raise SeplError(f"cannot read mask {p}: {e}", hint="the PNG is corrupt; regenerate the masks",
                        sample=sample)
    if arr.ndim == 3:  # colour PNG of a binary mask
        arr = arr[..., 0]
    return arr


def _read_metadata(path: Path) -> Dict[int, Dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = {}
            for row in reader:
                rec = {k: _number(v) for k, v in row.items() if k is not None}
                if "id" in rec and isinstance(rec["id"], int):
                    rows[rec["id"]] = rec
            return rows
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise SeplError(f"cannot read {path}: {e}", hint="the CSV is corrupt; regenerate the masks",
                        sample=path.parent.name)


def write_amg_folder(path: PathLike, masks: Any, meta: Optional[Sequence[Dict[str, Any]]] = None) -> Path:
    """Write masks as amg.py does: ``<k>.png`` (0/255) and ``metadata.csv``.

    Args:
        path: the image's folder (created).
        masks: (N, H, W) bool (or a list of (H, W) masks).
        meta: optional N dicts with any of ``AMG_COLUMNS``; missing area/bbox are computed,
            other missing fields are written as 0.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    masks = [np.asarray(m).astype(bool) for m in masks]
    if meta is not None and len(meta) != len(masks):
        raise SeplError(f"{len(masks)} masks but {len(meta)} metadata rows")
    lines = [",".join(AMG_COLUMNS)]
    for k, m in enumerate(masks):
        Image.fromarray(m.astype(np.uint8) * 255, mode="L").save(path / f"{k}.png")
        rec = _fill_meta(m, dict(meta[k]) if meta is not None else {})
        rec["id"] = k
        lines.append(",".join(str(rec.get(c, 0)) for c in AMG_COLUMNS))
    (path / "metadata.csv").write_text("\n".join(lines))
    return path


def _bbox_xywh(m: np.ndarray) -> List[int]:
    ys = np.flatnonzero(m.any(1))
    xs = np.flatnonzero(m.any(0))
    if ys.size == 0:
        return [0, 0, 0, 0]
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


def _fill_meta(m: np.ndarray, rec: Dict[str, Any]) -> Dict[str, Any]:
    rec.setdefault("area", int(m.sum()))
    if "bbox" in rec:
        rec.update(zip(("bbox_x0", "bbox_y0", "bbox_w", "bbox_h"), rec.pop("bbox")))
    if "point_coords" in rec:
        rec.update(zip(("point_input_x", "point_input_y"), rec.pop("point_coords")[0]))
    if "crop_box" in rec:
        rec.update(zip(("crop_box_x0", "crop_box_y0", "crop_box_w", "crop_box_h"), rec.pop("crop_box")))
    if "bbox_x0" not in rec:
        rec.update(zip(("bbox_x0", "bbox_y0", "bbox_w", "bbox_h"), _bbox_xywh(m)))
    if "crop_box_x0" not in rec:
        rec.update(crop_box_x0=0, crop_box_y0=0, crop_box_w=m.shape[1], crop_box_h=m.shape[0])
    return rec


def read_rle_json(path: PathLike, shape: Optional[Tuple[int, int]] = None) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """Read amg.py's ``coco_rle`` output for one image.

    Every RLE must cover its ``size`` exactly (run lengths >= 0 summing to H*W): a
    truncated or garbled one is an error, never decoded into a wrong mask. ``shape`` gives
    an empty list its (0, H, W) stack (see ``read_amg_folder``).

    Returns:
        masks: (N, H, W) bool in the file's order.
        meta: N dicts, each record without its ``"segmentation"``.
    """
    from pycocotools import mask as mask_utils

    path = Path(path)
    stem = path.stem
    try:
        records = json.loads(path.read_text())
    except FileNotFoundError:
        raise SeplError(f"mask file not found: {path}", sample=stem)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise SeplError(f"cannot read {path}: {e}", hint="the JSON is corrupt; regenerate the masks", sample=stem)
    if isinstance(records, dict) and "annotations" in records:  # tolerate a COCO-style wrapper
        records = records["annotations"]
    if not isinstance(records, list):
        raise SeplError(f"{path} does not hold a list of mask records", sample=stem)
    rles, meta = [], []
    for i, r in enumerate(records):
        seg = r.get("segmentation") if isinstance(r, dict) else None
        if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
            raise SeplError(f"record {i} of {path.name} has no RLE segmentation",
                            hint="write masks with output_mode='coco_rle'", sample=stem)
        counts = seg["counts"]
        try:
            h, w = (int(v) for v in seg["size"])
            if isinstance(counts, str):
                counts = counts.encode("ascii")
            runs = list(counts) if isinstance(counts, list) else rle_counts(counts)
        except (TypeError, ValueError, UnicodeEncodeError) as e:
            raise SeplError(f"record {i} of {path.name} has a malformed RLE ({e})",
                            hint="regenerate the masks", sample=stem)
        total = sum(runs)
        if h < 0 or w < 0 or any(c < 0 for c in runs) or total != h * w:
            raise SeplError(f"record {i} of {path.name} has a malformed RLE: its run lengths sum to {total}, "
                            f"not {h}x{w} = {h * w}", hint="the file is truncated or corrupt; regenerate the masks",
                            sample=stem)
        if isinstance(counts, list):
            rles.append(mask_utils.frPyObjects(dict(seg, counts=runs, size=[h, w]), h, w))
        else:
            rles.append(dict(size=[h, w], counts=counts))
        meta.append({k: v for k, v in r.items() if k != "segmentation"})
    if not rles:
        return _empty(shape), meta
    if len({tuple(r["size"]) for r in rles}) > 1:
        raise SeplError(f"masks in {path.name} have different sizes", sample=stem)
    try:
        with warnings.catch_warnings():  # pycocotools vs numpy 2 copy= keyword
            warnings.simplefilter("ignore", DeprecationWarning)
            dec = mask_utils.decode(rles)
    except Exception as e:
        raise SeplError(f"cannot decode the RLE masks of {path}: {e}", hint="regenerate the masks", sample=stem)
    return np.ascontiguousarray(dec.transpose(2, 0, 1)).astype(bool), meta


def rle_counts(counts: bytes) -> List[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``).

    Raises ValueError for a character outside the alphabet or a truncated last run."""
    out: List[int] = []
    p, n = 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("the counts string ends inside a run length")
            c = counts[p] - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {chr(counts[p])!r} is not RLE")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def encode_rle(mask: np.ndarray) -> Dict[str, Any]:
    """(H, W) bool -> COCO RLE dict with str counts (JSON-ready, as SAM's ``coco_rle``)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def write_rle_json(path: PathLike, masks: Any, meta: Optional[Sequence[Dict[str, Any]]] = None) -> Path:
    """Write masks as amg.py's ``coco_rle`` JSON: a list of records with RLE ``segmentation``
    plus ``area``, ``bbox`` (XYWH) and the given metadata fields."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    masks = [np.asarray(m).astype(bool) for m in masks]
    if meta is not None and len(meta) != len(masks):
        raise SeplError(f"{len(masks)} masks but {len(meta)} metadata rows")
    out = []
    for k, m in enumerate(masks):
        rec = dict(meta[k]) if meta is not None else {}
        rec.pop("id", None)
        rec["segmentation"] = encode_rle(m)
        rec.setdefault("area", int(m.sum()))
        rec.setdefault("bbox", _bbox_xywh(m))
        out.append(_jsonable(rec))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(out))
    os.replace(tmp, path)
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def read_masks(path: PathLike, shape: Optional[Tuple[int, int]] = None) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """Read one image's masks from an amg.py folder or a ``.json`` RLE file (``shape``: see
    ``read_amg_folder``)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return read_rle_json(path, shape)
    return read_amg_folder(path, shape)


def find_masks(root: PathLike, image_id: str) -> Optional[Path]:
    """The mask set of ``image_id`` under ``root``: ``root/<id>/`` or ``root/<id>.json``."""
    root = Path(root)
    folder = root / image_id
    if folder.is_dir():
        return folder
    js = root / f"{image_id}.json"
    if js.exists():
        return js
    return None
