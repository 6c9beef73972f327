"""SEPL merge: CAM seed label maps + class-agnostic (SAM) masks -> refined label maps.

Two modes (see ``merge``):

- ``"official"``: exactly what the released SEPL code (cskyl/SAM_WSSS,
  ``merge/max_iou_imp2.py``) computes, in its order-free vectorised form.
- ``"paper"``: the paper's assignment-then-selection with deterministic rules.

Masks are read once into a kernel that packs them to 64-bit words and answers a few
reductions (areas, mask/class intersections, unions as words); the decisions are made on the
small (N, K) statistics of the K classes present, the label map is composed on words and
unpacked once per label, and the only Python loops run over the masks and over the few classes
present in an image. Two kernels give identical results:

- ``"crops"`` (``sepl.cropped``): masks as boxes + crops (``CroppedMasks``, FiftyOne's
  instance-mask layout), packed to bits word-aligned with the image; it reads each mask's
  box only. The default for ``CroppedMasks``.
- ``"planes"``: an (N, H*W) stack packed to bits. The default for full-plane inputs
  (stacks, lists, RLE); torch tensors on a CUDA device are processed on that device.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .cropped import CropKernel, CroppedMasks
from .errors import SeplError

MODES = ("official", "paper")
PAPER_FALLBACKS = ("unmasked", "unselected")
KERNELS = ("auto", "crops", "planes")

# Reasons stored in MergeResult.records["reason"].
REASON_OS = "o_s"  # selected: o_s above its threshold
REASON_OP = "o_p"  # selected: o_p above its threshold
REASON_BOTH = "o_s+o_p"  # selected: both tests pass
REASON_REJECTED = "rejected"  # overlaps a class but fails both tests
REASON_BACKGROUND = "background"  # paper mode: background overlaps it most, dropped
REASON_NO_OVERLAP = "no_overlap"  # covers no pixel of any competing class
REASON_EMPTY = "empty"  # the mask has no pixel


@dataclass
class MergeResult:
    """Output of ``merge``.

    Attributes:
        labels: (H, W) uint8 label map (numpy; a torch tensor on the input's device when the
            seed was a torch tensor).
        records: one entry per input mask, in input order, as equal-length arrays:
            ``class_id`` int64 (the class the mask was given to; -1 none; 0 = background in
            paper mode), ``o_s`` / ``o_p`` float64 (|M & P_c| / |M| and |M & P_c| / |P_c| for
            that class, or for the foreground class it overlaps most when it has none),
            ``area`` int64, ``selected`` bool, ``reason`` list of str (see ``REASON_*``).
        mode: the mode used.
    """

    labels: Any
    records: Dict[str, Any] = field(default_factory=dict)
    mode: str = "paper"

    @property
    def num_selected(self) -> int:
        return int(np.count_nonzero(self.records["selected"]))


def merge(
    seed: Any,
    masks: Any,
    mode: str = "paper",
    num_classes: Optional[int] = None,
    ignore_index: int = 255,
    keep_ignore: bool = False,
    os_thresh: float = 0.5,
    op_thresh: float = 0.85,
    fallback: str = "unmasked",
    allow_empty: bool = False,
    name: Optional[str] = None,
    kernel: str = "auto",
) -> MergeResult:
    """Merge a CAM seed with class-agnostic masks into a refined label map.

    Args:
        seed: (H, W) integer label map: 0 background, 1..C-1 classes, ``ignore_index``
            unknown. numpy array or torch tensor.
        masks: (N, H, W) boolean stack (numpy or torch; 0/1 or 0/255 integers accepted), a
            list of (H, W) masks, a list of COCO RLE dicts (``{"size": [h, w], "counts": ...}``
            as SAM writes with ``output_mode="coco_rle"``), or a list of SAM
            ``generate()`` records (dicts with a ``"segmentation"`` key), or a
            ``sepl.cropped.CroppedMasks`` (boxes + crops, the fastest input: build it with
            ``CroppedMasks.from_relative`` from FiftyOne detections).
        mode: ``"official"`` or ``"paper"`` (see below).
        num_classes: C, classes including background. Default: the largest seed value other
            than ``ignore_index``, plus one. Seed values >= C (other than the ignore value)
            are an error.
        ignore_index: the seed's "unknown" value.
        keep_ignore: write ``ignore_index`` where the seed has it and no selected mask
            covers the pixel (otherwise such pixels become 0, as in the released code).
        os_thresh: select a mask when o_s = |M & P_c| / |M| exceeds this (strict).
        op_thresh: select a mask when o_p = |M & P_c| / |P_c| reaches this (``>=`` in
            official mode, as the released code; ``>`` in paper mode, as the paper).
        fallback: paper mode only: where the CAM label is kept: ``"unmasked"`` (pixels no
            mask covers, SPEC 1b) or ``"unselected"`` (pixels no selected mask covers).
        allow_empty: accept an empty mask set (the result is then the CAM fallback alone);
            by default an empty set is an error, since it usually means a failed mask run.
        name: the image's id, used in error messages.
        kernel: ``"auto"`` (crops for ``CroppedMasks``, planes for full-plane inputs),
            ``"crops"`` or ``"planes"``; all give identical results (module docstring).

    Returns:
        MergeResult with ``labels`` (H, W) uint8 and per-mask ``records``.

    Modes:
        ``"official"`` reproduces ``max_iou_imp2.py`` pixel for pixel: classes 1..C-1 claim
        masks greedily in ascending index (a mask goes to the *lowest* class for which
        o_s > 0.5 or o_p >= 0.85, even if a later class overlaps it more); each class paints
        its claimed masks plus its CAM pixels not covered by a mask still unclaimed when it
        was processed; higher classes overwrite lower ones; ignore pixels become 0. Known
        failure: a large background mask holding a small CAM region has o_p = 1 and paints
        the whole region with that class.

        ``"paper"`` follows the paper: each mask is assigned to the class (background
        included) whose seed region it overlaps most, measured as IoU (ties to the lower
        index); masks won by background are dropped, so a whole-image or large background
        mask never paints a class; an assigned mask is selected if o_s > ``os_thresh`` or
        o_p > ``op_thresh``; the CAM label is kept where no mask covers the pixel
        (``fallback``); selected masks are painted by decreasing area, so a smaller mask wins
        where masks of two classes overlap (equal areas: the lower class wins).

        Default ``"paper"`` (``fallback="unmasked"``), from ``benchmarks/compare_modes.py``
        (200 VOC train images, real TransCAM seeds at 72.08 mIoU, SAM-like masks made from
        the GT: shifted/grown/shrunk objects, parts, merged pairs, background pieces,
        clutter): official 76.34, paper 76.13 (unselected fallback 73.81); once the set also
        holds a whole-image and an all-background mask, as SAM's often does, official falls
        to 23.38 and paper keeps 73.52. Assigning by raw overlap count instead of IoU cost
        1.3 points (74.79): it gives background every object mask a small CAM under-covers.
        Use ``"official"`` to reproduce the released code's numbers.

    Both modes give the same result whatever the order of ``masks``.
    """
    if mode not in MODES:
        raise SeplError(f"unknown merge mode {mode!r}", hint=f"use one of {', '.join(MODES)}", sample=name)
    if fallback not in PAPER_FALLBACKS:
        raise SeplError(f"unknown fallback {fallback!r}", hint=f"use one of {', '.join(PAPER_FALLBACKS)}",
                        sample=name)
    torch_device = _torch_device(seed)
    seed_np = _to_numpy(seed)
    if seed_np.ndim != 2:
        raise SeplError(f"seed must be a 2-D label map, got shape {tuple(seed_np.shape)}", sample=name)
    if not (np.issubdtype(seed_np.dtype, np.integer) or seed_np.dtype == bool):
        raise SeplError(f"seed must hold integer class indices, got dtype {seed_np.dtype}",
                        hint="pass the hard label map (argmax of the CAM), not scores", sample=name)
    if kernel not in KERNELS:
        raise SeplError(f"unknown merge kernel {kernel!r}", hint=f"use one of {', '.join(KERNELS)}", sample=name)
    h, w = seed_np.shape
    stack = _kernel(masks, (h, w), kernel, name)
    n = stack.n
    if n == 0 and not allow_empty:
        raise SeplError("the mask set is empty", hint="rerun mask generation for this image, "
                        "or pass allow_empty=True to keep the seed", sample=name)

    flat = seed_np.reshape(-1)
    counts, c = _seed_counts(flat, num_classes, ignore_index, name)
    if mode == "official":
        records, out = _official(stack, flat, counts, c, os_thresh, op_thresh)
    else:
        records, out = _paper(stack, flat, counts, c, os_thresh, op_thresh, fallback)
    if keep_ignore and 0 <= ignore_index < counts.size and counts[ignore_index]:
        ign = flat == ignore_index
        sel = stack.union(np.flatnonzero(records["selected"]))
        if sel is not None:
            ign &= ~sel
        out[ign] = ignore_index
    labels = out.reshape(h, w)
    if torch_device is not None:
        import torch

        labels = torch.as_tensor(labels).to(torch_device)
    return MergeResult(labels=labels, records=records, mode=mode)


# ---------------------------------------------------------------------------------------
# the two modes: per-mask decisions on the small (N, C) statistics, then pixel composition
# from a few unions of mask groups


def _ratios(inter, area, b):
    # inter is 0 wherever area or b is: dividing by max(., 1) gives the 0 the ratio is defined as
    return inter / np.maximum(area, 1)[:, None], inter / np.maximum(b, 1)[None]


def _official(stack, flat, counts, c, os_thresh, op_thresh):
    n = stack.n
    classes = [v for v in range(1, c) if counts[v]]
    cls = np.array(classes, np.int64)
    planes = [stack.value_bits(flat, v) for v in classes]  # the CAM regions as packed words
    inter = stack.inters(planes)  # (N, K): only the classes present compete
    area = stack.area()  # after inters: the crops kernel packs the masks it reads first
    if not classes:  # no CAM region: nothing claims, the records show class 1's zero overlap
        inter, cls = np.zeros((n, 1), np.int64), np.ones(1, np.int64)
    o_s, o_p = _ratios(inter, area, counts[cls])
    pass_s = (o_s > os_thresh) & bool(classes)
    pass_p = (o_p >= op_thresh) & bool(classes)
    crit = pass_s | pass_p
    claimed = crit.any(1)
    # the lowest class that passes; for the record of unclaimed masks the one overlapped most
    col = np.where(claimed, np.argmax(crit, axis=1), np.argmax(inter, axis=1))
    rows = np.arange(n)
    class_id = np.where(claimed, cls[col], -1)
    reason = _reasons(claimed, pass_s[rows, col], pass_p[rows, col], area, inter.any(1))
    o_s, o_p = o_s[rows, col], o_p[rows, col]

    # key = owner class, or c ("+inf") for masks no class claims. Class v keeps its CAM pixels
    # not covered by a mask of key >= v (one still unclaimed when v was processed); elsewhere
    # the highest class claiming a covering mask paints. Only masks over CAM pixels matter.
    touch = inter.any(1)
    key = np.where(claimed, class_id, c)
    unions = {g: stack.union_bits(np.flatnonzero((key == g) & touch)) for g in np.unique(key[touch]).tolist()}
    cams, cover = [], None
    keys = sorted(unions, reverse=True)
    for v, p in reversed(list(zip(classes, planes))):
        while keys and keys[0] >= v:
            u = unions[keys.pop(0)]
            cover = u.copy() if cover is None else np.bitwise_or(cover, u, out=cover)
        cams.append((v, p if cover is None else p & ~cover))
    painted: Dict[int, np.ndarray] = {}
    for g in sorted(unions):  # ascending: a higher class overwrites
        if g < c:
            _paint(painted, g, unions[g])
    for v, cam in cams:  # disjoint, and no mask of a class >= v lies there
        _paint(painted, v, cam)
    out = stack.labels(list(painted.items()))
    records = dict(class_id=class_id, o_s=o_s, o_p=o_p, area=area, selected=claimed, reason=reason)
    return records, out


def _paper(stack, flat, counts, c, os_thresh, op_thresh, fallback):
    n = stack.n
    # background competes; its overlap is what the other seed values leave of each mask,
    # so the kernel only reads the masks where the seed is not background
    classes = [v for v in range(1, c) if counts[v]]
    others = [v for v in np.flatnonzero(counts).tolist() if v >= c]  # the ignore value
    planes = [stack.value_bits(flat, v) for v in classes + others]
    both = stack.inters(planes)
    area = stack.area()
    inter = np.zeros((n, c), np.int64)
    inter[:, classes] = both[:, :len(classes)]
    if counts[0]:
        inter[:, 0] = area - both.sum(1)
    b = counts[:c]
    # "overlaps most" as IoU: raw counts would hand every object mask that a small CAM
    # under-covers to the (large) background region
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / np.maximum(area[:, None] + b[None] - inter, 1)
    comp = np.where((b > 0)[None] & (inter > 0), iou, -1.0)
    assigned = np.argmax(comp, axis=1)  # ties -> lower index
    rows = np.arange(n)
    has = comp[rows, assigned] >= 0
    o_s_all, o_p_all = _ratios(inter, area, b)
    o_s, o_p = o_s_all[rows, assigned], o_p_all[rows, assigned]
    pass_s = o_s > os_thresh
    pass_p = o_p > op_thresh
    is_bg = has & (assigned == 0)
    selected = has & ~is_bg & (pass_s | pass_p)
    class_id = np.where(has, assigned, -1).astype(np.int64)
    reason = _reasons(selected, pass_s, pass_p, area, has)
    reason = [REASON_BACKGROUND if bg else r for bg, r in zip(is_bg.tolist(), reason)]

    sel_rows = np.flatnonzero(selected)
    # the CAM label where no mask (``fallback``) lies; only masks over CAM pixels can clear one
    covered = stack.union_bits(np.flatnonzero(inter[:, 1:].any(1)) if fallback == "unmasked" else sel_rows)
    painted = {v: p.copy() if covered is None else p & ~covered for v, p in zip(classes, planes)}
    # paint each class's selected union; where unions of different classes overlap, the
    # smallest covering mask wins (equal areas: the lower class)
    seen = clash = None
    for v in np.unique(class_id[sel_rows]).tolist():
        union = stack.union_bits(sel_rows[class_id[sel_rows] == v])
        if seen is None:
            seen, clash = union.copy(), np.zeros_like(union)
        else:
            np.bitwise_or(clash, seen & union, out=clash)
            np.bitwise_or(seen, union, out=seen)
        _paint(painted, v, union)
    out = stack.labels(list(painted.items()))
    if clash is not None and clash.any():
        clash_px = np.flatnonzero(stack.unpack(clash))
        order = sel_rows[np.lexsort((-class_id[sel_rows], -area[sel_rows]))]  # paint order
        rank = np.arange(1, order.size + 1)
        win = stack.max_key(order, rank, clash_px)
        out[clash_px] = class_id[order][win - 1]
    records = dict(class_id=class_id, o_s=o_s, o_p=o_p, area=area, selected=selected, reason=reason)
    return records, out


def _paint(painted: Dict[int, np.ndarray], v: int, bits: np.ndarray) -> None:
    """Label v over ``bits`` in a map of disjoint label -> words (``bits`` is not kept)."""
    clear = ~bits
    for words in painted.values():
        np.bitwise_and(words, clear, out=words)
    if v in painted:
        np.bitwise_or(painted[v], bits, out=painted[v])
    else:
        painted[v] = bits.copy()


_REASONS = (REASON_EMPTY, REASON_BOTH, REASON_OS, REASON_OP, REASON_REJECTED, REASON_NO_OVERLAP)


def _reasons(selected, pass_s, pass_p, area, overlaps) -> List[str]:
    codes = np.where(area == 0, 0, np.where(selected, np.where(pass_s & pass_p, 1, np.where(pass_s, 2, 3)),
                                            np.where(overlaps, 4, 5)))
    return [_REASONS[k] for k in codes.tolist()]


# ---------------------------------------------------------------------------------------
# input normalisation


def _torch_device(x: Any):
    if type(x).__module__.startswith("torch"):
        return x.device
    return None


def _to_numpy(x: Any) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _seed_counts(flat: np.ndarray, num_classes: Optional[int], ignore_index: int, name) -> Tuple[np.ndarray, int]:
    """Pixel counts per seed value (at least C + 1 entries) and C, validated."""
    if flat.size and np.issubdtype(flat.dtype, np.signedinteger) and flat.min() < 0:
        raise SeplError(f"seed has negative value {int(flat.min())}", sample=name)
    counts = _value_counts(flat)
    values = np.flatnonzero(counts)
    non_ignore = values[values != ignore_index]
    if num_classes is None:
        num_classes = max(int(non_ignore.max()) + 1 if non_ignore.size else 1, 2)
    if num_classes > 255:
        raise SeplError(f"num_classes={num_classes} does not fit the uint8 label map", sample=name)
    bad = non_ignore[non_ignore >= num_classes]
    if bad.size:
        raise SeplError(f"seed has class values {bad.tolist()} >= num_classes={num_classes}",
                        hint="pass the right num_classes, or set ignore_index to the seed's unknown value",
                        sample=name)
    if counts.size < num_classes + 1:
        counts = np.concatenate([counts, np.zeros(num_classes + 1 - counts.size, np.int64)])
    return counts, num_classes


def _kernel(masks: Any, shape: Tuple[int, int], kernel: str, name):
    """The kernel object over the normalised masks."""
    if isinstance(masks, CroppedMasks):
        if masks.shape != tuple(shape):
            raise SeplError(f"masks are {masks.shape[0]}x{masks.shape[1]} but the seed is {shape[0]}x{shape[1]}",
                            hint="compute the masks on the same image size as the seed", sample=name)
        if kernel == "planes":
            return _Masks(masks.to_planes().reshape(len(masks), -1), shape)
        return CropKernel(masks)
    stack = as_mask_stack(masks, shape, name=name)  # (N, H*W) bool, numpy or cuda tensor
    if _is_torch(stack):
        if kernel == "crops":
            raise SeplError("the crops kernel runs on the CPU; CUDA mask tensors use kernel='planes'",
                            hint="pass kernel='auto', or move the masks to the CPU", sample=name)
        return _Masks(stack)
    if kernel == "crops":
        return CropKernel(CroppedMasks.from_planes(stack.reshape(-1, *shape)))
    # a full stack: finding the boxes reads every plane once, as the packing does, so the
    # planes kernel is as fast here (benchmarks/bench_merge.py)
    return _Masks(stack, shape)


def _value_counts(flat: np.ndarray) -> np.ndarray:
    """``np.bincount(flat)`` (at least one entry) for a non-negative label map; for uint8 maps
    it finds the few values present with a bit mask and counts each (5-10x faster)."""
    if flat.size == 0:
        return np.zeros(1, np.int64)
    if flat.dtype != np.uint8:
        return np.bincount(flat, minlength=1)
    # bit v set for each value v < 32 present (numpy defines 1 << v = 0 for v >= 32)
    low = int(np.bitwise_or.reduce(np.left_shift(np.uint32(1), flat, dtype=np.uint32)))
    if int(flat.max()) >= 32:
        rest = np.bincount(flat[flat >= 32], minlength=1)
    else:
        rest = np.zeros(1, np.int64)
    counts = np.zeros(max(rest.size, low.bit_length(), 1), np.int64)
    counts[: rest.size] = rest
    for v in range(1, min(32, low.bit_length())):
        if low >> v & 1:
            counts[v] = np.count_nonzero(flat == v)
    if low & 1:  # zeros, usually the most pixels: what the other values leave
        counts[0] = flat.size - counts.sum()
    return counts


def as_mask_stack(masks: Any, shape: Tuple[int, int], name: Optional[str] = None):
    """Normalise a mask set to an (N, H*W) boolean stack.

    Accepts what ``merge`` accepts. Returns a numpy array, or a torch tensor when given a
    torch tensor on a CUDA device (CPU tensors are viewed as numpy).
    """
    h, w = shape
    if isinstance(masks, CroppedMasks):
        return masks.to_planes().reshape(len(masks), h * w)
    if type(masks).__module__.startswith("torch"):
        if masks.device.type != "cpu":
            return _check_torch_stack(masks, shape, name)
        masks = masks.detach().numpy()
    if isinstance(masks, np.ndarray):
        arr = masks
    else:
        masks = list(masks)
        if not masks:
            return np.zeros((0, h * w), bool)
        if isinstance(masks[0], dict):
            arr = _decode_dicts(masks, shape, name)
        else:
            try:
                arr = np.stack([_to_numpy(m) for m in masks])
            except ValueError:
                sizes = sorted({tuple(np.shape(m)) for m in masks})
                raise SeplError(f"masks have different sizes {sizes}; the seed is {h}x{w}",
                                hint="resize every mask to the seed's size", sample=name)
    if arr.ndim == 2 and arr.shape == (h, w):
        arr = arr[None]
    if arr.ndim != 3:
        raise SeplError(f"mask stack must be (N, H, W), got shape {arr.shape}", sample=name)
    if arr.shape[1:] != (h, w):
        raise SeplError(f"masks are {arr.shape[1]}x{arr.shape[2]} but the seed is {h}x{w}",
                        hint="compute the masks on the same image size as the seed", sample=name)
    return _binarise(arr, name).reshape(arr.shape[0], h * w)


def _binarise(arr: np.ndarray, name) -> np.ndarray:
    if arr.dtype == bool:
        return np.ascontiguousarray(arr)
    if arr.size == 0:
        return arr.astype(bool)
    if not np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.floating):
        raise SeplError(f"masks must be boolean, got dtype {arr.dtype}", sample=name)
    # 0/1 and 0/255 (PNG) masks are binary; anything else (scores, logits) is not
    lo, hi = arr.min(), arr.max()
    if lo < 0 or (hi not in (0, 1, 255)) or np.count_nonzero((arr != 0) & (arr != hi)):
        raise SeplError(f"masks are not binary (values {lo}..{hi})",
                        hint="threshold scores or logits first (e.g. logits > 0)", sample=name)
    return arr != 0


def _decode_dicts(records: List[dict], shape, name) -> np.ndarray:
    from pycocotools import mask as mask_utils

    h, w = shape
    rles, arrays = [], []
    for i, r in enumerate(records):
        seg = r.get("segmentation", r)
        if isinstance(seg, dict) and "counts" in seg:
            if tuple(seg.get("size", ())) != (h, w):
                raise SeplError(f"mask {i} is {tuple(seg.get('size', ()))} but the seed is {h}x{w}",
                                hint="compute the masks on the same image size as the seed", sample=name)
            counts = seg["counts"]
            if isinstance(counts, list):  # uncompressed RLE
                seg = mask_utils.frPyObjects(seg, h, w)
            elif isinstance(counts, str):
                seg = dict(size=seg["size"], counts=counts.encode("ascii"))
            rles.append(seg)
        else:
            arrays.append(np.asarray(seg))
    if rles and arrays:
        raise SeplError("mask list mixes RLE and array masks", sample=name)
    if arrays:
        return np.stack(arrays)
    try:
        with warnings.catch_warnings():  # pycocotools vs numpy 2 copy= keyword
            warnings.simplefilter("ignore", DeprecationWarning)
            dec = mask_utils.decode(rles)  # (H, W, N) uint8, Fortran order
    except Exception as e:  # pycocotools raises bare errors on corrupt counts
        raise SeplError(f"cannot decode RLE masks: {e}", hint="the JSON is corrupt; regenerate it",
                        sample=name)
    return np.ascontiguousarray(dec.transpose(2, 0, 1)).astype(bool)


def _check_torch_stack(masks, shape, name):
    h, w = shape
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or tuple(masks.shape[1:]) != (h, w):
        raise SeplError(f"masks have shape {tuple(masks.shape)} but the seed is {h}x{w}", sample=name)
    if masks.dtype != __import__("torch").bool:
        lo, hi = masks.min().item() if masks.numel() else 0, masks.max().item() if masks.numel() else 0
        if lo < 0 or hi not in (0, 1, 255) or bool(((masks != 0) & (masks != hi)).any()):
            raise SeplError(f"masks are not binary (values {lo}..{hi})",
                            hint="threshold scores or logits first (e.g. logits > 0)", sample=name)
        masks = masks != 0
    return masks.reshape(masks.shape[0], h * w).contiguous()


# ---------------------------------------------------------------------------------------
# the heavy kernels: the only places that touch the (N, H*W) stack


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


class _Masks:
    """The (N, H*W) stack with the few reductions the merge needs. numpy stacks are packed
    to 64-bit words once (8x less memory traffic), so statistics are popcounts and unions
    are ORs of packed rows; CUDA tensors stay on their device."""

    def __init__(self, stack, shape: Optional[Tuple[int, int]] = None):
        self.shape = shape
        self.n, self.hw = int(stack.shape[0]), int(stack.shape[1])
        self.torch = _is_torch(stack)
        self.stack = stack
        if not self.torch:
            self.packed = _pack(stack)

    def area(self) -> np.ndarray:
        if self.n == 0:
            return np.zeros(0, np.int64)
        if self.torch:
            return self.stack.sum(1).cpu().numpy().astype(np.int64)
        return np.bitwise_count(self.packed).sum(1, dtype=np.int64)

    def bits(self, pixels: np.ndarray) -> np.ndarray:
        """(HW,) bool -> (ceil(HW / 64),) uint64 words, the layout of the packed masks."""
        return _pack(np.asarray(pixels, bool)[None])[0]

    def value_bits(self, flat: np.ndarray, v: int) -> np.ndarray:
        """Words of the pixels where the (HW,) label map ``flat`` is v."""
        return self.bits(flat == v)

    def unpack(self, words: np.ndarray) -> np.ndarray:
        """Words (``bits``) -> (HW,) bool."""
        return np.unpackbits(words.view(np.uint8), count=self.hw).view(bool)

    def labels(self, painted: List[Tuple[int, np.ndarray]]) -> np.ndarray:
        """(HW,) uint8 label map: value v on the pixels of words b, for disjoint (v, b) pairs."""
        out = np.zeros(self.hw, np.uint8)
        for v, b in painted:
            out += np.multiply(np.unpackbits(b.view(np.uint8), count=self.hw), np.uint8(v))
        return out

    def inters(self, planes: List[np.ndarray]) -> np.ndarray:
        """(N, K) |M_k & S_j| for K pixel sets given as words (``bits``)."""
        out = np.zeros((self.n, len(planes)), np.int64)
        if self.n == 0 or not planes:
            return out
        if self.torch:
            import torch

            sets = np.stack([self.unpack(p) for p in planes], 1)
            sets = torch.as_tensor(sets, device=self.stack.device, dtype=torch.float32)
            # 0/1 products summed in float32 are exact below 2**24 pixels
            return (self.stack.float() @ sets).round().long().cpu().numpy()
        for j, p in enumerate(planes):
            out[:, j] = np.bitwise_count(self.packed & p).sum(1, dtype=np.int64)
        return out

    def union_bits(self, rows: np.ndarray) -> Optional[np.ndarray]:
        """Words (``bits``) of the union of the given masks, or None for no rows."""
        rows = np.asarray(rows)
        if rows.size == 0:
            return None
        if self.torch:
            import torch

            idx = torch.as_tensor(rows, device=self.stack.device)
            return self.bits(self.stack.index_select(0, idx).any(0).cpu().numpy())
        return np.bitwise_or.reduce(self.packed[rows], axis=0)

    def union(self, rows: np.ndarray) -> Optional[np.ndarray]:
        """(HW,) bool union of the given masks, or None for no rows."""
        u = self.union_bits(rows)
        return None if u is None else self.unpack(u)

    def max_key(self, rows: np.ndarray, keys: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        """(P,) max of ``keys`` (>= 1) over the given masks covering each given pixel; 0 if none."""
        if self.torch:
            import torch

            dev = self.stack.device
            sub = self.stack.index_select(0, torch.as_tensor(rows, device=dev))
            sub = sub.index_select(1, torch.as_tensor(pixels, device=dev))
            k = torch.as_tensor(keys, device=dev, dtype=torch.int64)
            return (sub * k[:, None]).amax(0).cpu().numpy()
        rows, keys, pixels = np.asarray(rows), np.asarray(keys, np.int64), np.asarray(pixels)
        if self.shape is None or pixels.size == 0:
            return (self.stack[np.ix_(rows, pixels)] * keys[:, None]).max(0, initial=0)
        # paint the keys within the pixels' bounding box (a (rows x pixels) gather can be
        # millions of elements where two classes' unions overlap widely)
        h, w = self.shape
        py, px = np.divmod(pixels, w)
        cy0, cy1, cx0, cx1 = int(py.min()), int(py.max()) + 1, int(px.min()), int(px.max()) + 1
        planes = self.stack.reshape(self.n, h, w)
        plane = np.zeros((cy1 - cy0, cx1 - cx0), np.int64)
        for r, k in zip(rows.tolist(), keys.tolist()):
            np.maximum(plane, planes[r, cy0:cy1, cx0:cx1] * np.int64(k), out=plane)
        return plane[py - cy0, px - cx0]


def _pack(stack: np.ndarray) -> np.ndarray:
    """(N, HW) bool -> (N, ceil(HW / 64)) uint64 bit rows (zero padded)."""
    packed = np.packbits(stack, axis=1)
    width = -(-packed.shape[1] // 8) * 8
    if width != packed.shape[1]:
        out = np.empty((packed.shape[0], width), np.uint8)
        out[:, : packed.shape[1]] = packed
        out[:, packed.shape[1]:] = 0
        packed = out
    return packed.view(np.uint64)


def merge_reference_loop(seed: np.ndarray, masks: np.ndarray, num_classes: int = 21) -> np.ndarray:
    """A straightforward per-class loop port of the released ``max_iou_imp2.py`` on in-memory
    masks: for each present class, one pass over the masks not yet claimed.

    Slow on purpose (the baseline of ``benchmarks/bench_merge.py`` and the oracle of the
    tests); use ``merge(..., mode="official")``. seed (H, W) int, masks (N, H, W) bool.
    Returns (H, W) of seed's dtype.
    """
    seen = set()
    out = np.zeros_like(seed)
    for c in range(1, num_classes):
        pc = seed == c
        if np.sum(pc) == 0:
            continue
        cand = []
        union = np.zeros_like(pc)
        for k in range(len(masks)):
            if k in seen:
                continue
            m = masks[k]
            union = np.logical_or(union, m)
            inter = np.sum((pc == m) * pc)
            if 2 * inter - np.sum(m) > 0 or inter / np.sum(pc) >= 0.85:
                cand.append(m)
                seen.add(k)
        cand.append(np.logical_and(union == 0, pc == 1))
        out[np.sum(cand, axis=0) > 0] = c
    return out
