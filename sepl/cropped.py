"""Class-agnostic masks stored as boxes + crops, and the merge kernel that works on them.

FiftyOne stores an instance mask as a bounding box and a boolean mask cropped to it; SAM masks
are mostly small, so the crops of 100 masks hold a fraction of the pixels of 100 full planes.
``CroppedMasks`` is that layout as arrays (no FiftyOne import); ``CropKernel`` computes the
statistics and unions ``sepl.merge.merge`` needs from the crops alone:

- intersections with the seed's classes: each crop, clipped to the bounding box of the pixel
  sets asked for (the merge asks for the non-background seed values), is copied once into
  rows of whole 64-pixel words aligned with that box and packed to bits; the (N, K) counts
  are popcounts of ANDs with the packed class planes, gathered word by word for all masks in
  one vectorised pass; areas come from the same words;
- unions and "last writer wins" paints touch each mask's box only.

Everything is exact integer arithmetic: results equal those of the full-plane kernel
(``tests/test_merge.py`` checks both against each other and the per-class loop).

Entry point: ``sepl.merge.merge(seed, CroppedMasks.from_relative(boxes, crops, (H, W)))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from .errors import SeplError

# The bool staging buffer for packing is built in chunks of about this many bytes, so memory
# stays bounded for many large masks (300 masks on a 2000x1500 image).
_CHUNK_BYTES = 32 << 20
_WORD = 64
try:  # np.count_nonzero without its Python wrapper (called once per mask)
    from numpy._core.multiarray import count_nonzero as _count_nonzero
except ImportError:  # pragma: no cover
    _count_nonzero = np.count_nonzero


@dataclass(frozen=True, eq=False)  # eq on arrays would be ambiguous
class CroppedMasks:
    """N binary masks on an (H, W) image, each a boolean crop inside its pixel box.

    Attributes:
        shape: (H, W) of the image.
        boxes: (N, 4) int64 ``[x0, y0, x1, y1]`` pixel boxes, half-open, inside the image
            (``0 <= x0 <= x1 <= W``, ``0 <= y0 <= y1 <= H``); an empty box is an empty mask.
        crops: N bool arrays, crop k of shape ``(y1 - y0, x1 - x0)`` of box k; mask k is
            ``crops[k]`` placed at ``[y0:y1, x0:x1]`` of an all-False (H, W) plane.

    Build one with ``CroppedMasks(shape, boxes, crops)`` (validated), ``from_planes`` (an
    (N, H, W) stack, tight boxes) or ``from_relative`` (FiftyOne's relative boxes).
    """

    shape: Tuple[int, int]
    boxes: np.ndarray
    crops: Tuple[np.ndarray, ...]

    def __init__(self, shape: Tuple[int, int], boxes: Any, crops: Sequence[Any], name: Optional[str] = None):
        h, w = int(shape[0]), int(shape[1])
        boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
        crops = tuple(crops)
        if len(crops) != boxes.shape[0]:
            raise SeplError(f"{boxes.shape[0]} boxes but {len(crops)} crops", sample=name)
        x0, y0, x1, y1 = boxes.T
        bad = np.flatnonzero((x0 < 0) | (y0 < 0) | (x1 > w) | (y1 > h) | (x1 < x0) | (y1 < y0))
        if bad.size:
            k = int(bad[0])
            raise SeplError(f"mask {k} has box {boxes[k].tolist()} outside the {h}x{w} image",
                            hint="clip boxes to the image (CroppedMasks.from_relative does)", sample=name)
        out = []
        for k, crop in enumerate(crops):
            crop = np.asarray(crop)
            want = (int(y1[k] - y0[k]), int(x1[k] - x0[k]))
            if crop.shape != want:
                raise SeplError(f"mask {k}: crop is {crop.shape} but its box {boxes[k].tolist()} is {want}",
                                hint="crop each mask to its box", sample=name)
            if crop.dtype != bool:
                from .merge import _binarise

                crop = _binarise(crop, name)
            out.append(crop)
        object.__setattr__(self, "shape", (h, w))
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "crops", tuple(out))

    def __len__(self) -> int:
        return self.boxes.shape[0]

    @classmethod
    def from_planes(cls, masks: np.ndarray) -> "CroppedMasks":
        """Tight boxes and crops (views) of an (N, H, W) bool stack; empty masks get an empty box."""
        masks = np.asarray(masks, dtype=bool)
        n, h, w = masks.shape
        rows, cols = masks.any(axis=2), masks.any(axis=1)
        has = rows.any(axis=1)
        y0 = np.where(has, rows.argmax(1), 0)
        y1 = np.where(has, h - rows[:, ::-1].argmax(1), 0)
        x0 = np.where(has, cols.argmax(1), 0)
        x1 = np.where(has, w - cols[:, ::-1].argmax(1), 0)
        boxes = np.stack([x0, y0, x1, y1], 1).astype(np.int64)
        crops = [masks[k, y0[k]:y1[k], x0[k]:x1[k]] for k in range(n)]
        return cls._trusted((h, w), boxes, crops)

    @classmethod
    def from_relative(cls, boxes: Any, crops: Sequence[Optional[Any]], shape: Tuple[int, int],
                      name: Optional[str] = None) -> "CroppedMasks":
        """Masks stored as FiftyOne stores instance masks, mapped to pixels exactly as
        ``sepl.fo.convert.detections_to_masks`` maps them.

        Args:
            boxes: (N, 4) float relative ``[x, y, w, h]`` (``fo.Detection.bounding_box``).
            crops: N masks cropped to their box (``fo.Detection.mask``: 2-D bool, or any
                array where nonzero is True), or None for a detection without a mask (it
                covers its whole box).
            shape: (H, W) of the image.

        The pixel box is ``x0 = round(x * W)``, ``x1 = round((x + w) * W)`` (same for y),
        clipped to the image; a crop whose size differs from its box is resized with nearest
        neighbour (OpenCV), as the loader does.
        """
        h, w = int(shape[0]), int(shape[1])
        rel = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        crops = list(crops)
        if len(crops) != rel.shape[0]:
            raise SeplError(f"{rel.shape[0]} boxes but {len(crops)} masks", sample=name)
        # Python's round() and np.rint both round half to even on the same float64 products
        x0 = np.maximum(0, np.rint(rel[:, 0] * w)).astype(np.int64)
        y0 = np.maximum(0, np.rint(rel[:, 1] * h)).astype(np.int64)
        x1 = np.minimum(w, np.rint((rel[:, 0] + rel[:, 2]) * w)).astype(np.int64)
        y1 = np.minimum(h, np.rint((rel[:, 1] + rel[:, 3]) * h)).astype(np.int64)
        empty = (x1 <= x0) | (y1 <= y0)
        boxes_px = np.stack([x0, y0, x1, y1], 1)
        boxes_px[empty] = 0
        out: List[np.ndarray] = []
        for k, crop in enumerate(crops):
            bh, bw = int(boxes_px[k, 3] - boxes_px[k, 1]), int(boxes_px[k, 2] - boxes_px[k, 0])
            if empty[k]:
                out.append(np.zeros((0, 0), bool))
                continue
            if crop is None:
                out.append(np.ones((bh, bw), bool))
                continue
            crop = np.asarray(crop)
            if crop.ndim == 3 and crop.shape[2] == 1:  # (h, w, 1) masks, as OpenCV reads them
                crop = crop[..., 0]
            if crop.ndim != 2:
                raise SeplError(f"mask {k} has shape {crop.shape}, not a 2-D crop", sample=name)
            crop = crop.astype(bool, copy=False)
            if crop.shape != (bh, bw):
                import cv2

                crop = cv2.resize(crop.astype(np.uint8), (bw, bh), interpolation=cv2.INTER_NEAREST) > 0
            out.append(crop)
        return cls._trusted((h, w), boxes_px, out)

    @classmethod
    def _trusted(cls, shape, boxes, crops) -> "CroppedMasks":
        obj = object.__new__(cls)
        object.__setattr__(obj, "shape", (int(shape[0]), int(shape[1])))
        object.__setattr__(obj, "boxes", np.asarray(boxes, dtype=np.int64).reshape(-1, 4))
        object.__setattr__(obj, "crops", tuple(crops))
        return obj

    def to_planes(self) -> np.ndarray:
        """The (N, H, W) bool stack."""
        h, w = self.shape
        out = np.zeros((len(self), h, w), bool)
        for k, (x0, y0, x1, y1) in enumerate(self.boxes.tolist()):
            out[k, y0:y1, x0:x1] = self.crops[k]
        return out


def pack_rows(planes: np.ndarray) -> np.ndarray:
    """(K, H, W) bool -> (K, H * ceil(W / 64)) uint64: each image row packed to whole words,
    zero padded, the layout ``CropKernel`` packs the crops into."""
    k, h, w = planes.shape
    ww = -(-w // _WORD)
    if ww * _WORD != w:
        padded = np.zeros((k, h, ww * _WORD), bool)
        padded[:, :, :w] = planes
        planes = padded
    return np.packbits(planes.reshape(k, -1), axis=1).view(np.uint64)


class CropKernel:
    """The reductions ``sepl.merge`` needs (same interface as its full-plane kernel), on crops.

    Masks are rows 0..N-1 of ``masks``; pixel sets and unions are flat (H*W,) bool arrays.
    """

    def __init__(self, masks: CroppedMasks):
        self.masks = masks
        self.h, self.w = masks.shape
        self.n, self.hw = len(masks), self.h * self.w
        self.torch = False
        self._boxes = masks.boxes.tolist()
        self._area: Optional[np.ndarray] = None
        self.region: Optional[Tuple[int, int, int, int]] = None  # box of the last ``inters`` sets

    def area(self) -> np.ndarray:
        """(N,) int64 pixel count of each mask (a by-product of ``inters`` for the masks
        inside its region)."""
        if self._area is None:
            self._area = self._count(range(self.n))
        return self._area

    def _count(self, rows) -> np.ndarray:
        crops = self.masks.crops
        return np.fromiter((_count_nonzero(crops[k]) for k in rows), np.int64)

    def inters(self, pixel_sets: List[np.ndarray]) -> np.ndarray:
        """(N, K) int64 |M_k & S_j| for K boolean (H*W,) pixel sets.

        Only the part of each mask inside the bounding box of the sets' union is read: the
        merge asks for the non-background seed values, often a fraction of the image.
        """
        k = len(pixel_sets)
        out = np.zeros((self.n, k), np.int64)
        if self.n == 0 or k == 0:
            return out
        sets = [np.asarray(p).reshape(self.h, self.w) for p in pixel_sets]
        row_any = np.logical_or.reduce([p.any(axis=1) for p in sets])
        col_any = np.logical_or.reduce([p.any(axis=0) for p in sets])
        rows, cols = np.flatnonzero(row_any), np.flatnonzero(col_any)
        if rows.size == 0:
            return out
        region = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        self.region = region  # every pixel of the sets lies inside
        rx0, ry0, rx1, ry1 = region
        ww = -(-(rx1 - rx0) // _WORD)
        staged = np.zeros((k, ry1 - ry0, ww * _WORD), bool)
        for j, p in enumerate(sets):
            staged[j, :, : rx1 - rx0] = p[ry0:ry1, rx0:rx1]
        planes = pack_rows(staged)  # (K, rows * ww) words
        b = self.masks.boxes
        x0, y0 = np.maximum(b[:, 0], rx0), np.maximum(b[:, 1], ry0)
        x1, y1 = np.minimum(b[:, 2], rx1), np.minimum(b[:, 3], ry1)
        live = np.flatnonzero((x1 > x0) & (y1 > y0))
        if live.size == 0:
            return out
        x0, y0, x1, y1 = x0[live] - rx0, y0[live] - ry0, x1[live] - rx0, y1[live] - ry0  # region coords
        w0 = x0 // _WORD
        nw = -(-x1 // _WORD) - w0  # words per clipped crop row
        bh = y1 - y0
        words = bh * nw
        seg = np.concatenate([[0], np.cumsum(words)])
        packed = self._pack(live, x0, y0, x1, y1, w0, nw, words, (rx0, ry0))
        # buffer word t (mask k, crop row i, word column j) -> region word (y0 + i) * ww + w0 + j:
        # first per crop row r (i = r - first row of k), then per word, with repeats only
        # int32 where it fits: half the memory traffic of these index arrays
        it = np.int32 if int(seg[-1]) + planes.shape[1] < 2 ** 31 else np.int64
        bh_, nw_ = bh.astype(it), nw.astype(it)
        r = np.arange(int(bh.sum()), dtype=it)
        first_row = np.concatenate([np.zeros(1, it), np.cumsum(bh_, dtype=it)])[:-1]
        base = np.repeat((y0 * ww + w0).astype(it) - first_row * it(ww), bh_) + r * it(ww)
        per_row = np.repeat(nw_, bh_)
        row_word = np.concatenate([np.zeros(1, it), np.cumsum(per_row, dtype=it)])[:-1]
        where = np.repeat(base - row_word, per_row) + np.arange(int(seg[-1]), dtype=it)
        hits = np.empty((k, packed.size), np.uint8)  # popcounts of 64-bit words fit in uint8
        step = 1 << 20  # gather in slices of words: bounded temporaries for huge mask sets
        for s in range(0, packed.size, step):
            e = min(s + step, packed.size)
            g = np.take(planes, where[s:e], axis=1)
            np.bitwise_and(g, packed[None, s:e], out=g)
            np.bitwise_count(g, out=hits[:, s:e])
        # consecutive masks' word ranges tile the buffer, so reduceat sums each mask exactly
        out[live] = np.add.reduceat(hits, seg[:-1], axis=1, dtype=np.int64).T
        if self._area is None:  # masks inside the region: their popcount; the others: count
            b = self.masks.boxes
            inside = np.zeros(self.n, bool)
            inside[live] = ((b[live, 0] >= rx0) & (b[live, 1] >= ry0) & (b[live, 2] <= rx1)
                            & (b[live, 3] <= ry1))
            area = np.zeros(self.n, np.int64)
            area[live] = np.add.reduceat(np.bitwise_count(packed), seg[:-1], dtype=np.int64)
            rest = np.flatnonzero(~inside)
            area[rest] = self._count(rest.tolist())
            self._area = area
        return out

    def _pack(self, live, x0, y0, x1, y1, w0, nw, words, origin) -> np.ndarray:
        """The clipped crops of masks ``live`` copied into rows of whole 64-pixel words
        (word-aligned with the region) and packed: (sum(words),) uint64."""
        crops, boxes = self.masks.crops, self.masks.boxes
        ox, oy = origin
        bx0, by0 = boxes[live, 0] - ox, boxes[live, 1] - oy
        # per mask: staging bytes, staged row width, crop slice (None: the whole crop)
        nbytes_all = (words * _WORD).tolist()
        rows_all = (y1 - y0).tolist()
        widths = (nw * _WORD).tolist()
        lefts = (x0 - w0 * _WORD).tolist()
        rights = (x1 - w0 * _WORD).tolist()
        whole = ((x0 == bx0) & (y0 == by0) & (x1 == boxes[live, 2] - ox) & (y1 == boxes[live, 3] - oy)).tolist()
        sy0, sy1, sx0, sx1 = (y0 - by0).tolist(), (y1 - by0).tolist(), (x0 - bx0).tolist(), (x1 - bx0).tolist()
        ids = live.tolist()
        out = []
        k, n = 0, live.size
        while k < n:
            # one chunk of masks whose staging buffer stays below _CHUNK_BYTES (at least one mask)
            end, size = k, 0
            while end < n and (end == k or size + nbytes_all[end] <= _CHUNK_BYTES):
                size += nbytes_all[end]
                end += 1
            buf = np.zeros(size, bool)
            pos = 0
            for j in range(k, end):
                crop = crops[ids[j]]
                if not whole[j]:
                    crop = crop[sy0[j]:sy1[j], sx0[j]:sx1[j]]
                nb = nbytes_all[j]
                buf[pos:pos + nb].reshape(rows_all[j], widths[j])[:, lefts[j]:rights[j]] = crop
                pos += nb
            out.append(np.packbits(buf).view(np.uint64))
            k = end
        return np.concatenate(out) if len(out) > 1 else out[0]

    def union(self, rows: np.ndarray, within: Optional[Tuple[int, int, int, int]] = None) -> Optional[np.ndarray]:
        """(H*W,) bool union of the given masks, or None for no rows. With ``within``
        (``[x0, y0, x1, y1]``), only pixels inside that box are set (for a caller that reads
        the union only there)."""
        rows = np.asarray(rows)
        if rows.size == 0:
            return None
        out = np.zeros((self.h, self.w), bool)
        boxes, crops = self._boxes, self.masks.crops
        if within is None:
            for k in rows.tolist():
                x0, y0, x1, y1 = boxes[k]
                if x1 > x0:
                    sub = out[y0:y1, x0:x1]
                    np.logical_or(sub, crops[k], out=sub)
            return out.reshape(-1)
        wx0, wy0, wx1, wy1 = within
        for k in rows.tolist():
            x0, y0, x1, y1 = boxes[k]
            ix0, iy0, ix1, iy1 = max(x0, wx0), max(y0, wy0), min(x1, wx1), min(y1, wy1)
            if ix1 > ix0 and iy1 > iy0:
                sub = out[iy0:iy1, ix0:ix1]
                np.logical_or(sub, crops[k][iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0], out=sub)
        return out.reshape(-1)

    def max_key(self, rows: np.ndarray, keys: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        """(P,) max of ``keys`` (>= 1) over the given masks covering each given pixel; 0 if none."""
        rows, keys, pixels = np.asarray(rows), np.asarray(keys, np.int64), np.asarray(pixels)
        if pixels.size == 0:
            return np.zeros(0, np.int64)
        py, px = np.divmod(pixels, self.w)
        # paint within the pixels' bounding box only: clashes are usually a thin band
        cy0, cy1, cx0, cx1 = int(py.min()), int(py.max()) + 1, int(px.min()), int(px.max()) + 1
        plane = np.zeros((cy1 - cy0, cx1 - cx0), np.int64)
        boxes, crops = self._boxes, self.masks.crops
        for i in np.argsort(keys, kind="stable").tolist():  # ascending: the last writer is the max
            k = int(rows[i])
            x0, y0, x1, y1 = boxes[k]
            iy0, iy1, ix0, ix1 = max(y0, cy0), min(y1, cy1), max(x0, cx0), min(x1, cx1)
            if iy1 > iy0 and ix1 > ix0:
                np.copyto(plane[iy0 - cy0:iy1 - cy0, ix0 - cx0:ix1 - cx0], keys[i],
                          where=crops[k][iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0])
        return plane[py - cy0, px - cx0]
