"""COCO instances -> a semantic label map, on arrays (no pycocotools, no FiftyOne)."""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

import numpy as np

from ..classes import IGNORE_INDEX

# (boolean (H, W) mask, class index or None for a category left out, area, is crowd)
Instance = Tuple[np.ndarray, Optional[int], float, bool]


def paint_instances(shape: Tuple[int, int], instances: Iterable[Instance]) -> np.ndarray:
    """(H, W) uint8 semantic label: 0 background, each instance's class index painted in
    decreasing area (so smaller instances stay visible on top of larger ones), crowd regions
    ``IGNORE_INDEX`` where no instance lies. Instances whose class is None are skipped."""
    label = np.zeros(shape, np.uint8)
    crowd = np.zeros(shape, bool)
    for mask, cls, _area, iscrowd in sorted(instances, key=lambda t: -t[2]):
        if cls is None:
            continue
        if iscrowd:
            crowd |= mask
        else:
            label[mask] = cls
    label[crowd & (label == 0)] = IGNORE_INDEX
    return label
