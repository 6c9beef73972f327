"""CAMs -> seed label maps, on numpy arrays only (no torch), so importers and simulators
share one rule: per-class min-max normalisation, a background score (constant threshold or
``(1 - max cam) ** alpha``), and an arg-max over background and the labelled classes."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import SeplError


def normalize_cams(cams: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Per-class min-max normalisation of (C, H, W) CAMs to [0, 1] (after ReLU)."""
    cams = np.maximum(np.asarray(cams, np.float32), 0)
    flat = cams.reshape(cams.shape[0], -1)
    lo = flat.min(1)[:, None, None] if flat.shape[1] else 0
    hi = flat.max(1)[:, None, None] if flat.shape[1] else 1
    return (cams - lo) / (hi - lo + eps)


def background_score(fg: np.ndarray, mode: str = "threshold", threshold: float = 0.26,
                     alpha: float = 8.0) -> np.ndarray:
    """(H, W) background score for normalised foreground maps (K, H, W).

    "threshold": the constant ``threshold``; "power": ``(1 - max_k fg_k) ** alpha``.
    """
    h, w = fg.shape[1:]
    if mode == "threshold":
        return np.full((h, w), threshold, np.float32)
    if mode == "power":
        peak = fg.max(0) if fg.shape[0] else np.zeros((h, w), np.float32)
        return np.power(1.0 - peak, alpha).astype(np.float32)
    raise SeplError(f"unknown background mode '{mode}'", hint="use 'threshold' or 'power'")


def cams_to_seed(
    cams: np.ndarray,
    present: Sequence[int],
    bg_mode: str = "threshold",
    threshold: float = 0.26,
    alpha: float = 8.0,
    normalized: bool = False,
) -> np.ndarray:
    """A seed label map from CAMs and the image's labels.

    Only the labelled classes compete; each pixel takes the argmax of background score and
    their normalised CAMs. An image with no labels gets an all-background seed.

    Args:
        cams: (C, H, W) CAMs of all foreground classes (unnormalised unless ``normalized``).
        present: 1-based class indices of the image's labels (values 1..C).
    Returns:
        (H, W) uint8 label map, 0 background, else the class index.
    """
    cams = np.asarray(cams)
    c, h, w = cams.shape
    present = sorted({int(p) for p in present})
    bad = [p for p in present if not 1 <= p <= c]
    if bad:
        raise SeplError(f"label indices {bad} are outside the model's classes 1..{c}")
    if not present:
        return np.zeros((h, w), np.uint8)
    fg = cams[[p - 1 for p in present]]
    if not normalized:
        fg = normalize_cams(fg)
    scores = np.concatenate([background_score(fg, bg_mode, threshold, alpha)[None], fg], 0)
    lut = np.array([0] + present, np.uint8)
    return lut[scores.argmax(0)]


def cam_heatmap(cams: np.ndarray, present: Sequence[int], normalized: bool = False) -> np.ndarray:
    """(H, W) float32 in [0, 1]: max over the labelled classes' normalised CAMs (for display)."""
    c, h, w = cams.shape
    idx = [int(p) - 1 for p in present if 1 <= int(p) <= c]
    if not idx:
        return np.zeros((h, w), np.float32)
    fg = cams[idx] if normalized else normalize_cams(cams[idx])
    return fg.max(0).astype(np.float32)
