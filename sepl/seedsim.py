"""Simulated CAM seeds: ground truth degraded the way class activation maps degrade it.

For the demo and for tests when no CAM network is at hand. A seed made here is NOT the
output of a network; it imitates the known failure modes of CAM pseudo-labels:

- blobby: a CAM is a low-resolution, smooth map, so corners, thin parts and holes
  (a ring's centre) are lost or filled;
- discriminative parts: activation peaks on some parts of the object and fades on others,
  so a thresholded CAM misses parts of the object (under-extension) ...
- ... or, with a low background threshold, spills over the boundary (over-extension);
- shifted: the stride of the network and the upsampling offset the map by a few pixels;
- missing parts: a whole part of the object may stay inactive;
- context: co-occurring background near the object activates too (false positives).

The pipeline is the usual one (SPEC 4): per-class maps, each normalised to max 1, only
the image's labelled classes kept, a constant background score, arg-max.
Pure numpy; reproducible from a ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class SeedSimConfig:
    """How badly the simulated CAM treats the ground truth (all sizes relative to the
    object's radius r = sqrt(area / pi)).

    Attributes:
      blur: std of the Gaussian that makes the map blobby, times r.
      focus: 0..1, how strongly activation concentrates on random "discriminative" parts.
      bg_threshold: (low, high) range of the per-image background score: low over-extends,
        high under-extends.
      shift: largest offset of a class map, times r.
      part_drop: probability that one part of an object (a disc of radius ~0.6 r) stays
        inactive.
      context: probability of a false-positive activation blob next to an object.
      miss: probability that a class gets no activation at all (its seed is empty).
    """

    blur: float = 0.40
    focus: float = 0.70
    bg_threshold: Tuple[float, float] = (0.15, 0.60)
    shift: float = 0.35
    part_drop: float = 0.70
    context: float = 0.70
    miss: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["bg_threshold"] = list(self.bg_threshold)
        return d


PRESETS: Dict[str, SeedSimConfig] = {
    # seeds as good as a strong refined CAM (about 80 mIoU on the generated scenes)
    "mild": SeedSimConfig(blur=0.3, focus=0.55, bg_threshold=(0.2, 0.5), shift=0.25, part_drop=0.45, context=0.45),
    # the default: about 68-69 mIoU on the generated scenes, like the TransCAM seeds of VOC train
    "cam": SeedSimConfig(),
    # a weak CAM: parts lost, large spill-over, now and then a class with no activation
    "harsh": SeedSimConfig(blur=0.5, focus=0.8, bg_threshold=(0.1, 0.7), shift=0.45, part_drop=0.85,
                           context=0.85, miss=0.05),
}


def box_blur(x: np.ndarray, radius: int) -> np.ndarray:
    """(H, W) float box filter of half-width ``radius`` (edges replicated)."""
    if radius < 1:
        return x.astype(np.float32, copy=True)
    k = 2 * radius + 1
    out = x.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis)
        n = out.shape[axis]
        hi = np.take(c, np.arange(k, k + n), axis=axis)
        lo = np.take(c, np.arange(0, n), axis=axis)
        out = (hi - lo) / k
    return out.astype(np.float32)


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W) float approximate Gaussian blur: three box filters of matching variance."""
    if sigma < 0.5:
        return x.astype(np.float32, copy=True)
    # three passes of width w have variance 3 (w^2 - 1) / 12 = sigma^2
    w = np.sqrt(4 * sigma * sigma + 1)
    r = max(1, int(round((w - 1) / 2)))
    out = x
    for _ in range(3):
        out = box_blur(out, r)
    return out


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``x`` moved by (dy, dx) pixels, zeros shifted in."""
    out = np.zeros_like(x)
    h, w = x.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = x[ys, xs]
    return out


def _smooth_noise(shape: Tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W) float32 random field in [0, 1] varying over about ``scale`` pixels."""
    f = gaussian_blur(rng.standard_normal(shape).astype(np.float32), max(scale, 1.0))
    lo, hi = float(f.min()), float(f.max())
    return (f - lo) / (hi - lo + 1e-12)


def _disc(shape: Tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return ((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r


def simulate_cams(
    label: np.ndarray,
    num_classes: int,
    rng: np.random.Generator,
    config: SeedSimConfig = SeedSimConfig(),
    ignore_index: int = 255,
) -> np.ndarray:
    """CAM-like activation maps from a ground-truth label map.

    Args:
      label: (H, W) int ground truth, 0 background, 1..C-1 classes, ``ignore_index`` unknown
        (the ignore band around objects counts as half object).
      num_classes: C.
    Returns:
      (C - 1, H, W) float32 maps in [0, 1], one per foreground class, each normalised to
      max 1 where the class is present and all zero where it is absent.
    """
    label = np.asarray(label)
    h, w = label.shape
    cams = np.zeros((num_classes - 1, h, w), np.float32)
    band = (label == ignore_index).astype(np.float32)
    for c in (int(v) for v in np.unique(label)):
        if c == 0 or c == ignore_index or c >= num_classes:
            continue
        obj = label == c
        if config.miss > 0 and rng.random() < config.miss:
            continue
        r = max(2.0, float(np.sqrt(obj.sum() / np.pi)))
        # the band belongs to whichever object it surrounds: half weight near this one
        near = gaussian_blur(obj.astype(np.float32), 2.0) > 0.05
        m = obj.astype(np.float32) + 0.5 * band * near
        cam = gaussian_blur(m, config.blur * r)
        # discriminative parts: activation varies over about half the object's size
        parts = _smooth_noise((h, w), 0.5 * r, rng)
        cam *= (1 - config.focus) + config.focus * parts
        ys, xs = np.nonzero(obj)
        if config.part_drop > 0 and rng.random() < config.part_drop:
            i = int(rng.integers(len(ys)))
            hole = gaussian_blur(_disc((h, w), ys[i], xs[i], 0.6 * r).astype(np.float32), 0.2 * r)
            cam *= 1 - hole
        if config.context > 0 and rng.random() < config.context:
            ang = rng.uniform(0, 2 * np.pi)
            d = rng.uniform(0.9, 1.6) * r
            cy, cx = ys.mean() + d * np.sin(ang), xs.mean() + d * np.cos(ang)
            blob = gaussian_blur(_disc((h, w), cy, cx, rng.uniform(0.3, 0.6) * r).astype(np.float32), 0.3 * r)
            cam = np.maximum(cam, rng.uniform(0.4, 0.8) * cam.max() * blob / max(blob.max(), 1e-6))
        if config.shift > 0:
            s = config.shift * r
            cam = _shift(cam, int(round(rng.uniform(-s, s))), int(round(rng.uniform(-s, s))))
        peak = cam.max()
        if peak > 0:
            cams[c - 1] = cam / peak
    return cams


def cams_to_seed(cams: np.ndarray, bg_threshold: float, present: Optional[Sequence[int]] = None) -> np.ndarray:
    """(H, W) uint8 seed: arg-max over a constant background score and the class maps.

    ``cams`` is (C - 1, H, W); ``present`` (class indices 1..C-1) restricts the arg-max to
    the image's labelled classes (default: the classes with any activation).
    """
    from .cam.seeds import cams_to_seed as seed_rule

    if present is None:
        present = [c + 1 for c in np.flatnonzero(cams.reshape(len(cams), -1).max(1) > 0)]
    present = [c for c in present if 1 <= c <= len(cams)]
    return seed_rule(cams, present, "threshold", threshold=bg_threshold, normalized=True)


def simulate_seed(
    label: np.ndarray,
    num_classes: int,
    rng: np.random.Generator,
    config: SeedSimConfig = SeedSimConfig(),
    ignore_index: int = 255,
) -> np.ndarray:
    """(H, W) uint8 simulated CAM seed of a ground-truth label map (0..C-1, no ignore).

    Only classes present in ``label`` can appear (image-level labels are known).
    """
    cams = simulate_cams(label, num_classes, rng, config, ignore_index)
    lo, hi = config.bg_threshold
    present = [int(c) for c in np.unique(label) if 0 < c < num_classes and c != ignore_index]
    return cams_to_seed(cams, float(rng.uniform(lo, hi)), present)
