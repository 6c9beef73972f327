"""Paired image/label transforms (torchvision ``references/segmentation`` style).

Each transform takes and returns ``(image, target)``: image a float or uint8 tensor
(3, H, W), target an int64 tensor (H, W) of class indices with 255 = ignore. Geometry is
applied to both; the label is always resampled with nearest neighbour, so no new class
values appear, and padding of the label uses the ignore value so that padded pixels never
count in the loss.
"""

from __future__ import annotations

import random
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..classes import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Pair = Tuple[torch.Tensor, torch.Tensor]


def to_tensors(image: np.ndarray, label: np.ndarray) -> Pair:
    """(H, W, 3) uint8 and (H, W) uint8 arrays -> (3, H, W) uint8 and (H, W) int64 tensors."""
    img = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    return img, torch.from_numpy(np.array(label, dtype=np.int64))


def resize_pair(image: torch.Tensor, target: torch.Tensor, size: Tuple[int, int]) -> Pair:
    """Resize to ``size`` = (h, w): bilinear for the image, nearest for the label."""
    dtype = image.dtype
    img = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    if dtype == torch.uint8:
        img = img.round().clamp(0, 255).to(torch.uint8)
    tgt = F.interpolate(target[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return img, tgt


class Compose:
    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: torch.Tensor) -> Pair:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


class RandomScale:
    """Scale both by a factor drawn uniformly from [min_scale, max_scale]."""

    def __init__(self, min_scale: float, max_scale: float):
        self.min_scale, self.max_scale = min_scale, max_scale

    def __call__(self, image, target):
        s = random.uniform(self.min_scale, self.max_scale)
        h, w = target.shape[-2:]
        size = (max(1, int(round(h * s))), max(1, int(round(w * s))))
        return resize_pair(image, target, size)


class RandomCrop:
    """A random ``size`` x ``size`` crop; smaller inputs are padded first (image with 0,
    label with the ignore value)."""

    def __init__(self, size: int, ignore_index: int = IGNORE_INDEX):
        self.size, self.ignore_index = size, ignore_index

    def __call__(self, image, target):
        h, w = target.shape[-2:]
        ph, pw = max(self.size - h, 0), max(self.size - w, 0)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0)
            target = F.pad(target, (0, pw, 0, ph), value=self.ignore_index)
            h, w = target.shape[-2:]
        y = random.randint(0, h - self.size)
        x = random.randint(0, w - self.size)
        return image[:, y:y + self.size, x:x + self.size], target[y:y + self.size, x:x + self.size]


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image, target):
        if random.random() < self.p:
            return image.flip(-1), target.flip(-1)
        return image, target


class Normalize:
    """uint8 (or 0..1 float) image -> float normalised with ``mean``/``std``."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, image, target):
        img = image.float()
        if image.dtype == torch.uint8:
            img = img / 255.0
        return (img - self.mean) / self.std, target


def train_transforms(crop_size: int, scale_min: float = 0.5, scale_max: float = 2.0,
                     ignore_index: int = IGNORE_INDEX) -> Compose:
    """Random scale, random crop with ignore padding, horizontal flip, normalisation."""
    return Compose([
        RandomScale(scale_min, scale_max),
        RandomCrop(crop_size, ignore_index),
        RandomHorizontalFlip(0.5),
        Normalize(),
    ])


def eval_transforms() -> Compose:
    """Whole image, normalised: predictions are scored at the label's own resolution."""
    return Compose([Normalize()])


def normalize_image(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 normalised tensor."""
    img = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
    return Normalize()(img, torch.empty(0))[0]


__all__: List[str] = [
    "Compose", "RandomScale", "RandomCrop", "RandomHorizontalFlip", "Normalize",
    "train_transforms", "eval_transforms", "to_tensors", "resize_pair", "normalize_image",
]
