"""Losses for training CAM networks from image-level labels (SPEC 3, HFPL).

All take the logit map ``z`` (N, C, h, w) of the C foreground classes and multi-hot labels
``y`` (N, C) float in {0, 1}. HFPL treats every class as its own binomial (sigmoid)
posterior, never a softmax over classes.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F


def gap_bce_loss(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label BCE on the globally average-pooled logits (the usual CAM loss). Scalar."""
    return F.binary_cross_entropy_with_logits(z.mean(dim=(2, 3)), labels)


def sample_pixels(z: torch.Tensor, num_samples: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Importance-sample ``num_samples`` logits per image and class, with replacement.

    Pixel i of class c is drawn with probability proportional to ``sigmoid(z_c(i)) + 1e-5``
    (HFPL's ``sample_probs``). The draw itself carries no gradient; the gathered logits do.

    Returns (N, C, S) logits.
    """
    n, c, h, w = z.shape
    flat = z.reshape(n * c, h * w)
    with torch.no_grad():
        probs = torch.sigmoid(flat.float()) + 1e-5
        idx = torch.multinomial(probs, num_samples, replacement=True, generator=generator)
    return flat.gather(1, idx).view(n, c, num_samples)


def importance_sampling_loss(z: torch.Tensor, labels: torch.Tensor, num_samples: int = 10,
                             generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Mean BCE-with-logits of importance-sampled pixel logits against the image label.

    Every class is sampled, present or not: for an absent class the loss pushes down the
    pixels the model currently believes in most; for a present one it raises them. Scalar.
    """
    s = sample_pixels(z, num_samples, generator)
    return F.binary_cross_entropy_with_logits(s, labels[:, :, None].expand_as(s))


def normalized_cam_targets(z: torch.Tensor, labels: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """HFPL's prediction features y for the feature-similarity loss.

    Per-class ReLU + min-max normalisation of z, times the labels; a background channel
    ``1 - max_c y_c`` is prepended. Returns (N, C + 1, h, w) in [0, 1]. Differentiable.
    """
    p = F.relu(z)
    flat = p.flatten(2)
    lo = flat.min(dim=2).values[..., None, None]
    hi = flat.max(dim=2).values[..., None, None]
    fg = F.relu(p - lo - eps) / (hi - lo + eps) * labels[:, :, None, None]
    if fg.shape[1]:
        bg = 1 - fg.max(dim=1, keepdim=True).values
    else:
        bg = torch.ones_like(z[:, :1])
    return torch.cat([bg, fg], dim=1)


def _colour_sign(dx: torch.Tensor, mu: float) -> torch.Tensor:
    # s in (-1, 1): -1 for similar colours (pull predictions together), +1 across edges
    dx = dx.clamp(0.0, 1.0)
    return torch.tanh(mu + torch.log((dx + 1e-5) / (1 - dx + 1e-5)))


def feature_similarity_loss(
    image: torch.Tensor,
    y: torch.Tensor,
    mu: float = 2.5,
    sigma: float = 5.0,
    radius: Optional[int] = None,
) -> torch.Tensor:
    """HFPL's feature-similarity (colour-edge) loss over pixel pairs within a local window.

    ``L = -(1 / (n h w)) * sum_{i != j, |p_i - p_j|_inf <= radius} k_ij * d_y(i, j) * s(i, j)`` with
    ``d_x = ||x_i - x_j||_1 / 3`` (x clamped to [0, 1]), ``s = tanh(mu + log(d_x / (1 - d_x)))``,
    ``d_y = 0.5 ||y_i - y_j||^2`` and ``k_ij = exp(-|p_i - p_j|^2 / 2 sigma^2) / (2 pi sigma^2)``.
    The all-pairs formula (``feature_similarity_loss_allpairs``) differs only by the pairs farther
    than ``radius`` (default ``ceil(3 sigma)``), where the Gaussian is below 1.1% of its peak.

    Args:
        image: (N, 3, h, w) RGB in [0, 1], already at the logit grid's size.
        y: (N, K, h, w) prediction features (``normalized_cam_targets``).
    Returns:
        scalar loss. Memory is O(N h w (2 radius + 1)^2) for the pair weights instead of O(N (h w)^2).
    """
    if image.shape[0] != y.shape[0] or image.shape[2:] != y.shape[2:]:
        raise ValueError(f"image {tuple(image.shape)} and y {tuple(y.shape)} must share batch and grid size")
    n, cx, h, w = image.shape
    r = int(math.ceil(3 * sigma)) if radius is None else int(radius)
    r = max(0, min(r, max(h, w) - 1))
    # The pair weights w_ij = k_ij s_ij depend on the image only (no gradient) and are
    # symmetric, and d_y = (|y_i|^2 + |y_j|^2) / 2 - y_i.y_j, so over ordered pairs
    #   sum_ij w_ij d_y(i, j) = sum_i |y_i|^2 W_i - 2 sum_i y_i . H_i,
    # W_i = sum_j w_ij over the whole window, H_i = sum of w_ij y_j over the half window
    # (offsets dy > 0, or dy == 0 and dx > 0): one weighted filter of y, no pair tensor.
    with torch.no_grad():
        x = image.clamp(0.0, 1.0)
        xp = F.pad(torch.cat([x, torch.ones_like(x[:, :1])], 1), (r, r, r, r))  # + validity channel
        offs = torch.arange(-r, r + 1, device=y.device, dtype=y.dtype)
        rows = []
        for dy in range(0, r + 1):
            xs = xp[:, :, r + dy:r + dy + h].unfold(3, 2 * r + 1, 1)  # (N, cx+1, h, w, 2r+1), a view
            k = torch.exp(-(dy ** 2 + offs ** 2) / (2 * sigma ** 2)) / (2 * math.pi * sigma ** 2)
            if dy == 0:
                k = torch.where(offs > 0, k, torch.zeros_like(k))
            dx = (x[..., None] - xs[:, :cx]).abs().sum(1) / cx
            rows.append((k * _colour_sign(dx, mu) * xs[:, cx]).to(y.dtype))  # (N, h, w, 2r+1)
        half = torch.stack(rows, 0).permute(0, 4, 1, 2, 3)  # (r+1 rows, 2r+1 cols, N, h, w)
        # W_i: the half-window weights at i, plus those of the pairs (i - o, i) seen from i - o
        wsum = half.sum((0, 1))
        hp = F.pad(half, (r, r, r, r))
        for dy in range(0, r + 1):
            for c, dx in enumerate(range(-r, r + 1)):
                if dy == 0 and dx <= 0:
                    continue
                wsum += hp[dy, c, :, r - dy:r - dy + h, r - dx:r - dx + w]
    yp = F.pad(y, (r, r, r, r))
    acc = y.new_zeros(y.shape)
    for dy in range(0, r + 1):
        for c, dx in enumerate(range(-r, r + 1)):
            if dy == 0 and dx <= 0:
                continue
            acc = acc.addcmul(half[dy, c].unsqueeze(1), yp[:, :, r + dy:r + dy + h, r + dx:r + dx + w])
    total = (y.pow(2).sum(1) * wsum).sum() - 2 * (y * acc).sum()
    return -total / (n * h * w)


def feature_similarity_loss_allpairs(image: torch.Tensor, y: torch.Tensor, mu: float = 2.5,
                                     sigma: float = 5.0) -> torch.Tensor:
    """The reference formula over all (h w)^2 ordered pixel pairs; O((h w)^2) memory.

    For tests and benchmarks of ``feature_similarity_loss``; same arguments and value
    up to the window truncation.
    """
    n, cx, h, w = image.shape
    x = image.clamp(0.0, 1.0).flatten(2).transpose(1, 2)  # (N, hw, 3)
    yf = y.flatten(2).transpose(1, 2)
    gy, gx = torch.meshgrid(torch.arange(h, dtype=y.dtype, device=y.device),
                            torch.arange(w, dtype=y.dtype, device=y.device), indexing="ij")
    pos = torch.stack([gy.flatten(), gx.flatten()], 1)
    k = torch.exp(-torch.cdist(pos, pos).pow(2) / (2 * sigma ** 2)) / (2 * math.pi * sigma ** 2)
    s = _colour_sign(torch.cdist(x, x, p=1) / cx, mu)
    dyv = 0.5 * torch.cdist(yf, yf).pow(2)
    return -(k * dyv * s).sum() / (n * h * w)


def hfpl_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    image: Optional[torch.Tensor] = None,
    importance_sampling: bool = True,
    is_weight: float = 0.2,
    num_samples: int = 10,
    feature_similarity: bool = True,
    fs_weight: float = 1.0,
    fs_mu: float = 2.5,
    fs_sigma: float = 5.0,
    generator: Optional[torch.Generator] = None,
) -> Dict[str, torch.Tensor]:
    """The training loss: GAP BCE, optionally mixed with importance sampling
    (``(1 - is_weight) * GAP + is_weight * IS``), plus ``fs_weight`` * feature similarity.

    Args:
        z: (N, C, h, w) logit map. labels: (N, C) multi-hot float.
        image: (N, 3, H, W) RGB in [0, 1], needed for the feature-similarity loss; it is
            resized (bilinear) to the logit grid.
    Returns:
        dict with "loss" (the total to backpropagate) and each term ("gap", "is", "fs")
        that was computed, detached.
    """
    out = {}
    gap = gap_bce_loss(z, labels)
    out["gap"] = gap.detach()
    cls = gap
    if importance_sampling and is_weight > 0:
        isl = importance_sampling_loss(z, labels, num_samples, generator)
        out["is"] = isl.detach()
        cls = (1 - is_weight) * gap + is_weight * isl
    total = cls
    if feature_similarity and fs_weight > 0:
        if image is None:
            raise ValueError("the feature-similarity loss needs the input image")
        small = F.interpolate(image, size=z.shape[2:], mode="bilinear", align_corners=True)
        fs = feature_similarity_loss(small, normalized_cam_targets(z, labels), fs_mu, fs_sigma)
        out["fs"] = fs.detach()
        total = total + fs_weight * fs
    out["loss"] = total
    return out
