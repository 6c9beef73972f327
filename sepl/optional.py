"""Importing optional extras with an error that names the pip extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import SeplError

# module -> (pip extra, what needs it)
EXTRAS = {
    "torch": ("sam", "PyTorch"),
    "torchvision": ("train", "torchvision (CAM and DeepLab backbones)"),
    "segment_anything": ("sam", "segment-anything (SAM masks)"),
    "groundingdino": ("grounding", "groundingdino-py (Grounding DINO)"),
    "transformers": ("sam2", "transformers"),  # SAM 2 / SAM-HQ / SAM 3 (no Grounding DINO needed)
    "timm": ("grounding", "timm"),
}


def require(module: str, feature: str = "") -> ModuleType:
    """Import ``module`` or raise a SeplError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra, what = EXTRAS.get(module, ("all", module))
        need = f" for {feature}" if feature else ""
        raise SeplError(
            f"{what} is not installed{need} ({e})",
            hint=f"pip install 'sepl[{extra}]' (or run scripts/setup.sh)",
        )
