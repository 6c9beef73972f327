"""Class-agnostic masks stored as boxes + crops, and the merge kernel that works on them.

FiftyOne stores an instance mask as a bounding box and a boolean mask cropped to it; SAM masks
are mostly small, so the crops of 100 masks hold a fraction of the pixels of 100 full planes.
``CroppedMasks`` is that layout as arrays (no FiftyOne import); ``CropKernel`` computes the
statistics, unions and label maps ``sepl.merge.merge`` needs from the crops alone:

- each crop is read once: copied into rows of whole 64-pixel words aligned with the image's
  words (staged in L2-sized chunks) and packed to bits; areas are popcounts of those words;
- the (N, K) intersections with the seed's classes are popcounts of ANDs with the packed
  class planes, gathered word by word in one vectorised pass over the masks whose box holds
  a word of some class (a prefix count over the words finds them);
- unions are ORs of each mask's words into its box of an image of words; the merge composes
  the label map on words (CAM fallback, painting order) and unpacks it once per label.

Everything is exact integer arithmetic: results equal those of the full-plane kernel
(``tests/test_merge.py`` checks both against each other and the per-class loop). The
intersections and unions also have compiled loops (``sepl._jit``, numba), which a long run
switches to; their results are the numpy code's.

Entry point: ``sepl.merge.merge(seed, CroppedMasks.from_relative(boxes, crops, (H, W)))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from . import _jit
from .errors import SeplError

# The bool staging buffer for packing is built in chunks of about this many bytes: a chunk is
# still in the L2 cache when it is packed (measured faster than one large buffer), and memory stays
# bounded for many large masks (300 masks on a 2000x1500 image).
_CHUNK_BYTES = 256 << 10
_WORD = 64


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
    zero padded: the layout of ``CropKernel``'s words."""
    k, h, w = planes.shape
    ww = -(-w // _WORD)
    if ww * _WORD != w:
        padded = np.zeros((k, h, ww * _WORD), bool)
        padded[:, :, :w] = planes
        planes = padded
    return np.packbits(planes.reshape(k, -1), axis=1).view(np.uint64)


class CropKernel:
    """The reductions ``sepl.merge`` needs (same interface as its full-plane kernel), on crops.

    Masks are rows 0..N-1 of ``masks``; pixel sets are flat (H*W,) bool arrays, packed by
    ``bits`` to the kernel's words: (H * WW,) uint64, image row y in words y*WW .. y*WW+WW-1
    (WW = ceil(W / 64)), as ``pack_rows``. Each crop is packed once (``_pack``) to rows of
    whole words of that layout; everything else reads those words.
    """

    def __init__(self, masks: CroppedMasks):
        self.masks = masks
        self.h, self.w = masks.shape
        self.n, self.hw = len(masks), self.h * self.w
        self.ww = -(-self.w // _WORD)
        self.torch = False
        self._jit = _jit.active()  # compiled loops for inters and unions (same results)
        b = masks.boxes
        self._w0 = b[:, 0] // _WORD
        self._nw = np.where(b[:, 2] > b[:, 0], -(-b[:, 2] // _WORD) - self._w0, 0)  # words per crop row
        self._bh = b[:, 3] - b[:, 1]
        self._words: Optional[np.ndarray] = None  # packed crops, masks in ``_order``
        self._start: Optional[np.ndarray] = None  # (N + 1,) word offset of mask k (by index k)
        self._area: Optional[np.ndarray] = None

    # --- the bit layout ---------------------------------------------------------------------

    def bits(self, pixels: np.ndarray) -> np.ndarray:
        """(H*W,) bool -> (H*WW,) uint64 words."""
        return pack_rows(np.asarray(pixels, bool).reshape(1, self.h, self.w))[0]

    def value_bits(self, flat: np.ndarray, v: int) -> np.ndarray:
        """Words of the pixels where the (H*W,) label map ``flat`` is v (compared straight
        into the padded rows that are packed)."""
        staged = np.zeros((self.h, self.ww * _WORD), bool)
        np.equal(flat.reshape(self.h, self.w), v, out=staged[:, :self.w])
        return np.packbits(staged).view(np.uint64)

    def labels(self, painted: List[Tuple[int, np.ndarray]]) -> np.ndarray:
        """(H*W,) uint8 label map: value v on the pixels of words b, for disjoint (v, b) pairs;
        0 elsewhere."""
        if not painted:
            return np.zeros(self.hw, np.uint8)
        out = None
        for v, b in painted:
            u = np.unpackbits(b.view(np.uint8))
            np.multiply(u, np.uint8(v), out=u)
            out = u if out is None else np.add(out, u, out=out)
        return np.ascontiguousarray(out.reshape(self.h, -1)[:, :self.w]).reshape(-1)

    def unpack(self, words: np.ndarray) -> np.ndarray:
        """(H*WW,) uint64 words -> (H*W,) bool."""
        u = np.unpackbits(words.view(np.uint8)).view(bool)
        return np.ascontiguousarray(u.reshape(self.h, -1)[:, :self.w]).reshape(-1)

    # --- packing ----------------------------------------------------------------------------

    def _pack(self, order: np.ndarray) -> None:
        """Pack every crop, masks in ``order``, into rows of whole words aligned with the image
        words (a crop row spans ``_nw`` words from word column ``_w0``); areas are popcounts."""
        crops, boxes = self.masks.crops, self.masks.boxes
        words = (self._bh * self._nw)[order]
        start = np.zeros(self.n + 1, np.int64)
        start[order] = np.cumsum(words) - words
        start[self.n] = int(words.sum())
        nbytes_all = (words * _WORD).tolist()
        rows_all = self._bh[order].tolist()
        widths = (self._nw[order] * _WORD).tolist()
        lefts = (boxes[order, 0] - self._w0[order] * _WORD).tolist()
        rights = (boxes[order, 2] - self._w0[order] * _WORD).tolist()
        ids = order.tolist()
        out = [np.zeros(0, np.uint64)]
        k, n = 0, len(ids)
        while k < n:
            # one chunk of masks whose staging buffer stays below _CHUNK_BYTES (at least one mask)
            end, size = k, 0
            while end < n and (end == k or size + nbytes_all[end] <= _CHUNK_BYTES):
                size += nbytes_all[end]
                end += 1
            buf = np.zeros(size, bool)
            pos = 0
            for j in range(k, end):
                nb = nbytes_all[j]
                if nb:
                    buf[pos:pos + nb].reshape(rows_all[j], widths[j])[:, lefts[j]:rights[j]] = crops[ids[j]]
                pos += nb
            out.append(np.packbits(buf).view(np.uint64))
            k = end
        self._words = np.concatenate(out) if len(out) != 1 else out[0]
        self._start = start
        area = np.zeros(self.n, np.int64)
        full = order[words > 0]  # reduceat needs non-empty segments
        if full.size:
            area[full] = np.add.reduceat(np.bitwise_count(self._words), start[full], dtype=np.int64)
        self._area = area

    def area(self) -> np.ndarray:
        """(N,) int64 pixel count of each mask."""
        if self._area is None:
            self._pack(np.arange(self.n))
        return self._area

    def inters(self, planes: List[np.ndarray]) -> np.ndarray:
        """(N, K) int64 |M_k & S_j| for K pixel sets given as words (``bits``).

        Only masks whose box holds a word of some set are read (packed first, so their words
        are one leading run of the buffer): one vectorised gather of the sets' words.
        """
        k = len(planes)
        out = np.zeros((self.n, k), np.int64)
        if self.n == 0 or k == 0:
            return out
        sets = np.stack(planes)  # (K, H*WW)
        if self._jit:  # one compiled pass over every mask's words (sepl._jit)
            if self._words is None:
                self._pack(np.arange(self.n))
            return _jit.crop_inters(sets, self._words, self._start, self.masks.boxes[:, 1], self._bh, self._w0,
                                    self._nw, self.ww)
        live = self._live(np.bitwise_or.reduce(sets, axis=0).reshape(self.h, self.ww))
        if live.size == 0:
            if self._words is None:
                self._pack(np.arange(self.n))
            return out
        words = self._bh[live] * self._nw[live]
        seg = np.cumsum(words) - words
        if self._words is None or not np.array_equal(self._start[live], seg):
            # live masks first (a second call with other sets packs again: merge calls once)
            rest = np.ones(self.n, bool)
            rest[live] = False
            self._pack(np.concatenate([live, np.flatnonzero(rest)]))
        where = self._where(live, seg)
        total = where.size
        hits = np.empty((k, total), np.uint8)  # popcounts of 64-bit words fit in uint8
        step = 1 << 20  # gather in slices of words: bounded temporaries for huge mask sets
        for s in range(0, total, step):
            e = min(s + step, total)
            g = np.take(sets, where[s:e], axis=1)
            np.bitwise_and(g, self._words[None, s:e], out=g)
            np.bitwise_count(g, out=hits[:, s:e])
        # consecutive masks' word ranges tile the run, so reduceat sums each mask exactly
        out[live] = np.add.reduceat(hits, seg, axis=1, dtype=np.int64).T
        return out

    def _live(self, any_words: np.ndarray) -> np.ndarray:
        """Masks (ascending index) whose box covers a non-zero word of the (H, WW) plane:
        the others meet no pixel of the sets. A 2-D prefix count over the words."""
        nz = np.zeros((self.ww + 1, self.h + 1), np.int32)  # transposed: long rows to sum along
        t = nz[1:, 1:]
        np.not_equal(any_words.T, 0, out=t)
        np.cumsum(t, axis=1, out=t)
        np.cumsum(t, axis=0, out=t)
        b = self.masks.boxes
        y0, y1, w0, w1 = b[:, 1], b[:, 3], self._w0, self._w0 + self._nw
        count = nz[w1, y1] - nz[w1, y0] - nz[w0, y1] + nz[w0, y0]
        return np.flatnonzero((count > 0) & (self._nw > 0) & (self._bh > 0))

    def _where(self, live: np.ndarray, seg: np.ndarray) -> np.ndarray:
        """(T,) index in the image words of each word of masks ``live``, which lead the buffer
        (mask m's words start at ``seg[m]``)."""
        bh, nw = self._bh[live], self._nw[live]
        y0, w0 = self.masks.boxes[live, 1], self._w0[live]
        total, nrows = int(seg[-1] + bh[-1] * nw[-1]), int(bh.sum())
        # int32 where it fits: half the memory traffic of these index arrays
        it = np.int32 if total + self.h * self.ww < 2 ** 31 else np.int64
        first_row = (np.cumsum(bh) - bh).astype(it)
        gap = (self.ww - nw).astype(it)  # image words skipped between two crop rows
        # row r (crop row i of mask m): image word of its first word minus its buffer offset
        a = (y0 * self.ww + w0 - seg).astype(it) - first_row * gap
        row_base = np.repeat(a, bh) + np.arange(nrows, dtype=it) * np.repeat(gap, bh)
        return np.repeat(row_base, np.repeat(nw.astype(it), bh)) + np.arange(total, dtype=it)

    # --- unions and paints ------------------------------------------------------------------

    def union_bits(self, rows: np.ndarray) -> Optional[np.ndarray]:
        """(H*WW,) uint64 words of the union of the given masks, or None for no rows."""
        rows = np.asarray(rows)
        if rows.size == 0:
            return None
        if self._words is None:
            self._pack(np.arange(self.n))
        out = np.zeros((self.h, self.ww), np.uint64)
        words, start, boxes = self._words, self._start, self.masks.boxes
        if self._jit:
            _jit.crop_union(out, rows.astype(np.int64, copy=False), words, start, boxes[:, 1], self._bh, self._w0,
                            self._nw)
            return out.reshape(-1)
        for k, s, y0, y1, w0, nw in zip(rows.tolist(), start[rows].tolist(), boxes[rows, 1].tolist(),
                                        boxes[rows, 3].tolist(), self._w0[rows].tolist(), self._nw[rows].tolist()):
            if nw == 1:  # a 1-D ufunc call costs a quarter of a 2-D one
                sub = out[y0:y1, w0]
                np.bitwise_or(sub, words[s:s + y1 - y0], sub)
            elif nw and y1 > y0:
                sub = out[y0:y1, w0:w0 + nw]
                np.bitwise_or(sub, words[s:s + (y1 - y0) * nw].reshape(y1 - y0, nw), sub)
        return out.reshape(-1)

    def union(self, rows: np.ndarray) -> Optional[np.ndarray]:
        """(H*W,) bool union of the given masks, or None for no rows."""
        u = self.union_bits(rows)
        return None if u is None else self.unpack(u)

    def max_key(self, rows: np.ndarray, keys: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        """(P,) max of ``keys`` (>= 1) over the given masks covering each given pixel; 0 if none."""
        rows, keys, pixels = np.asarray(rows), np.asarray(keys, np.int64), np.asarray(pixels)
        if pixels.size == 0:
            return np.zeros(0, np.int64)
        py, px = np.divmod(pixels, self.w)
        # paint within the pixels' bounding box only: clashes are usually a thin band
        cy0, cy1, cx0, cx1 = int(py.min()), int(py.max()) + 1, int(px.min()), int(px.max()) + 1
        plane = np.zeros((cy1 - cy0, cx1 - cx0), np.int64)
        boxes, crops = self.masks.boxes.tolist(), self.masks.crops
        for i in np.argsort(keys, kind="stable").tolist():  # ascending: the last writer is the max
            k = int(rows[i])
            x0, y0, x1, y1 = boxes[k]
            iy0, iy1, ix0, ix1 = max(y0, cy0), min(y1, cy1), max(x0, cx0), min(x1, cx1)
            if iy1 > iy0 and ix1 > ix0:
                np.copyto(plane[iy0 - cy0:iy1 - cy0, ix0 - cx0:ix1 - cx0], keys[i],
                          where=crops[k][iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0])
        return plane[py - cy0, px - cx0]
