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
from .seeds import background_score, cam_heatmap, cams_to_seed, normalize_cams  # noqa: F401 (re-exported)

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
