"""From a CAM source to seeds: multi-scale + flip CAMs, per-class normalisation, background.

A *CAM source* is any callable mapping (N, 3, h, w) float RGB in [0, 1] to (N, C, h', w')
class maps; a ``CAMNet`` is one, ``sepl.cam.gradcam.GradCAM`` another (it sets
``needs_grad = True``). Class indices here are 1-based foreground indices as in label maps
(0 = background), so class k of the source is label value k + 1.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SeplError

DEFAULT_SCALES: Tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 in [0, 1]."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise SeplError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div_(255.0)


def compute_cams(
    source: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    scales: Sequence[float] = DEFAULT_SCALES,
    flip: bool = True,
    device: Optional[torch.device | str] = None,
) -> np.ndarray:
    """Multi-scale (+ horizontal flip) CAMs of one image, summed at image size.

    Each scale's (flipped-back) maps are ReLU'd, resized bilinearly to (H, W) and summed.

    Args:
        source: a CAM source (see module doc); put a ``CAMNet`` in eval mode first.
        image: (H, W, 3) uint8 RGB.
    Returns:
        (C, H, W) float32, >= 0, unnormalised.
    """
    if not scales:
        raise SeplError("no inference scales given", hint="pass e.g. scales=(1.0, 0.5, 1.5, 2.0)")
    x = image_to_tensor(image)
    if device is not None:
        x = x.to(device)
    h, w = x.shape[2:]
    total = None
    with torch.set_grad_enabled(bool(getattr(source, "needs_grad", False))):
        for s in scales:
            size = (max(8, int(round(h * s))), max(8, int(round(w * s))))
            xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False) if size != (h, w) else x
            if flip:
                xs = torch.cat([xs, xs.flip(3)], 0)
            maps = source(xs)
            maps = F.relu(maps.detach())
            maps = maps[:1] + maps[1:].flip(3) if flip else maps
            maps = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False)[0]
            total = maps if total is None else total + maps
    return total.float().cpu().numpy()


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


def seed_from_image(
    source: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    present: Sequence[int],
    scales: Sequence[float] = DEFAULT_SCALES,
    flip: bool = True,
    bg_mode: str = "threshold",
    threshold: float = 0.26,
    alpha: float = 8.0,
    device: Optional[torch.device | str] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """One image's seed and heatmap: ((H, W) uint8 seed, (H, W) float32 heatmap in [0, 1]).

    A ``torch.nn.Module`` source is switched to eval mode.
    """
    if isinstance(source, torch.nn.Module):
        source.eval()
    present = sorted({int(p) for p in present})
    if not present:
        h, w = np.asarray(image).shape[:2]
        return np.zeros((h, w), np.uint8), np.zeros((h, w), np.float32)
    cams = compute_cams(source, image, scales, flip, device)
    norm = normalize_cams(cams)
    seed = cams_to_seed(norm, present, bg_mode, threshold, alpha, normalized=True)
    return seed, cam_heatmap(norm, present, normalized=True)
