"""FiftyOne label documents as plain dicts (the BSON FiftyOne stores), without FiftyOne.

FiftyOne stores a numpy array (``Segmentation.mask``, ``Detection.mask``) as
``zlib.compress(np.save(array))`` bytes; a label is a dict with ``_id`` (ObjectId) and
``_cls`` (its class name). Reading and writing these dicts directly is what makes the bulk
path fast: no mongoengine document is built, validated or change-tracked per label.
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
import zlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from bson import ObjectId

from ..errors import SeplError

try:  # zlib-ng inflates the same streams 2-4x faster (identical bytes: inflate is defined by the stream)
    from zlib_ng.zlib_ng import compress as _deflate
    from zlib_ng.zlib_ng import decompress as _inflate
except ImportError:  # pragma: no cover - a platform without its wheel: the standard library
    _deflate, _inflate = zlib.compress, zlib.decompress


def encode_array(array: np.ndarray) -> bytes:
    """FiftyOne's serialisation of an array (``fiftyone.core.utils.serialize_numpy_array``):
    a zlib stream of its ``np.save`` bytes, which FiftyOne's ``zlib.decompress`` reads.
    Deflated with zlib-ng at the same level: other bytes than the standard library's, the
    same array, 2-3x as fast (VOC label maps 1.37 -> 0.60 ms, ``benchmarks/bench_scoring.py``)."""
    with io.BytesIO() as f:
        np.save(f, np.asarray(array), allow_pickle=False)
        return _deflate(f.getvalue())


_HEADER = re.compile(r"""\{'descr': '([^']+)', 'fortran_order': (True|False), 'shape': \(([0-9, ]*)\), \}""")


@functools.lru_cache(maxsize=4096)
def _parse_header(header: bytes):
    m = _HEADER.match(header.decode("latin1"))
    if m is None:
        return None
    shape = tuple(int(v) for v in m.group(3).replace(" ", "").split(",") if v)
    return np.dtype(m.group(1)), m.group(2) == "True", shape


def _npy_header(buf: bytes):
    """(dtype, fortran order, shape, data offset) of .npy version 1 bytes whose header is in
    ``buf`` and of the form ``np.save`` writes, else None."""
    if buf[:6] != b"\x93NUMPY" or len(buf) < 10 or buf[6] != 1:
        return None
    n = int.from_bytes(buf[8:10], "little")
    head = _parse_header(buf[10:10 + n]) if len(buf) >= 10 + n else None
    return None if head is None else (*head, 10 + n)


def decode_array(data: bytes) -> np.ndarray:
    """Inverse of ``encode_array``: a read-only array over the decompressed bytes.

    The .npy header is parsed here (``np.load`` spends ~0.1 ms per array in
    ``ast.literal_eval``, a third of refine's time on 100-mask samples); headers of another
    form fall back to ``np.load``. Decompression uses zlib-ng when installed (a dependency of
    sepl; same bytes, 2-4x as fast as the standard library's zlib: ``benchmarks/bench_scoring.py``).
    """
    buf = _inflate(data)
    head = _npy_header(buf)
    if head is not None:
        dtype, fortran, shape, offset = head
        arr = np.frombuffer(buf, dtype=dtype, offset=offset, count=math.prod(shape))
        return arr.reshape(shape, order="F") if fortran else arr.reshape(shape)
    with io.BytesIO(buf) as f:
        return np.load(f)


def array_header(data: bytes) -> Optional[Tuple[np.dtype, Tuple[int, ...]]]:
    """(dtype, shape) of the array ``encode_array`` made ``data`` of, from its first bytes
    only (~2 us, not a full inflate); None for another form."""
    try:
        head = _npy_header(zlib.decompressobj().decompress(data, 256))
    except zlib.error:
        return None
    return None if head is None else (head[0], head[2])


def new_id() -> ObjectId:
    return ObjectId()


def segmentation_doc(mask: Optional[np.ndarray] = None, mask_path: Optional[str] = None) -> Dict[str, Any]:
    """A ``fo.Segmentation`` document: the (H, W) uint8 ``mask`` in the database, or a
    ``mask_path`` to a PNG."""
    doc: Dict[str, Any] = {"_id": new_id(), "_cls": "Segmentation", "tags": []}
    if mask_path is not None:
        doc["mask_path"] = str(mask_path)
    else:
        doc["mask"] = encode_array(np.asarray(mask, dtype=np.uint8))
    return doc


def read_png(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im)


def label_map(doc: Optional[dict], field: str, shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """The (H, W) label map of a ``fo.Segmentation`` document (``mask`` or ``mask_path``).

    Raises SeplError (the messages of ``sepl.fo.convert.load_label_map``) when it is
    missing, not a Segmentation, RGB, or of another size than ``shape``.
    """
    if doc is None:
        raise SeplError(f"field '{field}' holds no segmentation",
                        hint=f"compute or import '{field}' for this sample first, or pick another field")
    if doc.get("_cls") != "Segmentation":
        raise SeplError(f"field '{field}' is a {doc.get('_cls')}, not a Segmentation",
                        hint="choose a semantic-segmentation field")
    try:
        if doc.get("mask") is not None:
            mask = decode_array(doc["mask"])
        elif doc.get("mask_path"):
            mask = read_png(doc["mask_path"])
        else:
            raise SeplError(f"field '{field}' has no mask", hint="recompute the field")
    except SeplError:
        raise
    except Exception as e:
        raise SeplError(f"cannot load the mask of '{field}': {e}",
                        hint="the mask file is missing or corrupt; recompute the field")
    if mask.ndim == 3:
        if not (np.all(mask[..., 0] == mask[..., 1]) and np.all(mask[..., 0] == mask[..., 2])):
            raise SeplError(f"field '{field}' holds an RGB mask", hint="store class indices, not colours")
        mask = mask[..., 0]
    if shape is not None and tuple(mask.shape) != tuple(shape):
        raise SeplError(f"'{field}' is {mask.shape[1]}x{mask.shape[0]} but the image is {shape[1]}x{shape[0]}",
                        hint="recompute the label map at the image's size")
    return mask


def box_pixels(box: Sequence[float], height: int, width: int) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1) integer pixel box of a relative ``[x, y, w, h]`` box, clipped
    (as ``sepl.fo.convert.detection_box_pixels``)."""
    x, y, bw, bh = box
    x0, y0 = int(round(x * width)), int(round(y * height))
    x1, y1 = int(round((x + bw) * width)), int(round((y + bh) * height))
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def instance_crops(doc: Optional[dict], field: str, height: int, width: int
                   ) -> Tuple[np.ndarray, List[Optional[np.ndarray]]]:
    """Boxes (N, 4) int (x0, y0, x1, y1) and bool crops (box-sized, or None for a whole
    box) of a ``fo.Detections`` document, in stored order. A crop whose size does not match
    its box (written by other tools) is resized with nearest neighbour."""
    if doc is None:
        raise SeplError(f"field '{field}' holds no masks",
                        hint=f"generate or import masks into '{field}' for this sample first")
    if doc.get("_cls") != "Detections":
        raise SeplError(f"field '{field}' is a {doc.get('_cls')}, not Detections",
                        hint="choose a field of instance masks")
    items = doc.get("detections") or []
    boxes = np.zeros((len(items), 4), np.int64)
    crops: List[Optional[np.ndarray]] = []
    for k, det in enumerate(items):
        x0, y0, x1, y1 = box_pixels(det.get("bounding_box") or (0, 0, 0, 0), height, width)
        boxes[k] = x0, y0, max(x0, x1), max(y0, y1)
        if x1 <= x0 or y1 <= y0:
            crops.append(np.zeros((0, 0), bool))
            continue
        try:
            if det.get("mask") is not None:
                crop = decode_array(det["mask"])
            elif det.get("mask_path"):
                crop = read_png(det["mask_path"])
            else:
                crops.append(None)
                continue
        except Exception as e:
            raise SeplError(f"cannot load instance mask {k} of '{field}': {e}",
                            hint="the mask is missing or corrupt; regenerate the masks")
        crop = np.asarray(crop)
        if crop.ndim == 3:
            crop = crop[..., 0]
        crop = crop.astype(bool)
        if crop.shape != (y1 - y0, x1 - x0):
            import cv2

            crop = cv2.resize(crop.astype(np.uint8), (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST) > 0
        crops.append(crop)
    return boxes, crops


def crops_to_stack(boxes: np.ndarray, crops: List[Optional[np.ndarray]], height: int, width: int) -> np.ndarray:
    """The (N, H, W) bool stack of boxes + crops (as ``sepl.fo.convert.detections_to_masks``)."""
    out = np.zeros((len(crops), height, width), dtype=bool)
    for k, crop in enumerate(crops):
        x0, y0, x1, y1 = (int(v) for v in boxes[k])
        if x1 <= x0 or y1 <= y0:
            continue
        out[k, y0:y1, x0:x1] = True if crop is None else crop
    return out


def detection_masks(doc: Optional[dict], field: str, height: int, width: int) -> np.ndarray:
    """(N, H, W) bool stack of a ``fo.Detections`` document's instance masks."""
    boxes, crops = instance_crops(doc, field, height, width)
    return crops_to_stack(boxes, crops, height, width)


def detections_doc(masks: np.ndarray, label: str = "mask", scores: Optional[Sequence[float]] = None,
                   attributes: Optional[Dict[str, Sequence[Any]]] = None) -> Dict[str, Any]:
    """A ``fo.Detections`` document for an (N, H, W) bool stack, each mask cropped to its
    box (``sepl.fo.convert.masks_to_detections``, same boxes and crops)."""
    masks = np.asarray(masks, dtype=bool)
    n, h, w = masks.shape
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    dets = []
    for k in range(n):
        ys, xs = np.flatnonzero(rows[k]), np.flatnonzero(cols[k])
        if len(ys):
            y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
        else:
            y0 = y1 = x0 = x1 = 0
        det: Dict[str, Any] = {"_id": new_id(), "_cls": "Detection", "attributes": {}, "tags": [], "label": label,
                               "bounding_box": [x0 / w, y0 / h, (x1 - x0) / w, (y1 - y0) / h],
                               "mask": encode_array(masks[k, y0:y1, x0:x1])}
        if scores is not None:
            det["confidence"] = float(scores[k])
        for name, values in (attributes or {}).items():
            v = values[k]
            det[name] = v.item() if isinstance(v, np.generic) else v
        dets.append(det)
    return {"_cls": "Detections", "detections": dets}


def spill_masks(doc: Dict[str, Any], folder: str, stem: str) -> Dict[str, Any]:
    """A copy of a ``fo.Segmentation`` / ``fo.Detections`` document whose in-database masks
    are written as PNGs under ``folder`` (``mask_path``), for samples too large for one
    MongoDB document. Instance masks are written 0/255."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)

    def write(array: np.ndarray, path: str) -> str:
        tmp = path + ".tmp.png"
        Image.fromarray(array).save(tmp)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
        return path

    out = dict(doc)
    if doc.get("_cls") == "Segmentation" and doc.get("mask") is not None:
        out.pop("mask")
        out["mask_path"] = write(decode_array(doc["mask"]).astype(np.uint8), os.path.join(folder, f"{stem}.png"))
    elif doc.get("_cls") == "Detections":
        dets = []
        for k, det in enumerate(doc.get("detections") or []):
            det = dict(det)
            if det.get("mask") is not None:
                crop = decode_array(det.pop("mask"))
                if crop.size:
                    det["mask_path"] = write(crop.astype(np.uint8) * 255, os.path.join(folder, f"{stem}_{k}.png"))
            dets.append(det)
        out["detections"] = dets
    return out
