"""Inference with a trained DeepLab: whole-image or sliding-window, from a checkpoint."""

from __future__ import annotations

import math
import os
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SeplError
from .transforms import normalize_image


def predict_logits(model: torch.nn.Module, image: torch.Tensor, mode: str = "whole",
                   crop_size: int = 513, stride: Optional[int] = None) -> torch.Tensor:
    """Class scores for one normalised image.

    Args:
        image: (3, H, W) float tensor on the model's device.
        mode: ``"whole"`` (one forward pass) or ``"slide"`` (``crop_size`` windows every
            ``stride`` pixels, default 2/3 of the crop, logits averaged where they overlap;
            images smaller than a window are zero-padded, i.e. mean-coloured).
    Returns:
        (C, H, W) float tensor of logits.
    """
    if mode == "whole":
        return model(image[None])["out"][0]
    if mode != "slide":
        raise SeplError(f"unknown inference mode '{mode}'", hint="use 'whole' or 'slide'")
    _, h, w = image.shape
    stride = stride or max(1, crop_size * 2 // 3)
    ph, pw = max(crop_size - h, 0), max(crop_size - w, 0)
    padded = F.pad(image, (0, pw, 0, ph)) if (ph or pw) else image
    H, W = padded.shape[-2:]
    ys = _starts(H, crop_size, stride)
    xs = _starts(W, crop_size, stride)
    logits = None
    count = torch.zeros((1, H, W), device=image.device)
    for y in ys:
        for x in xs:
            out = model(padded[None, :, y:y + crop_size, x:x + crop_size])["out"][0].float()
            if logits is None:
                logits = torch.zeros((out.shape[0], H, W), device=image.device)
            logits[:, y:y + crop_size, x:x + crop_size] += out
            count[:, y:y + crop_size, x:x + crop_size] += 1
    return (logits / count)[:, :h, :w]


def _starts(size: int, crop: int, stride: int) -> List[int]:
    n = max(1, math.ceil((size - crop) / stride) + 1)
    return sorted({max(0, min(i * stride, size - crop)) for i in range(n)})


def load_checkpoint(path: str | os.PathLike, device: Optional[str] = None) -> Tuple[torch.nn.Module, dict]:
    """The model of a checkpoint written by :func:`sepl.deeplab.train.train` (``checkpoint.pth``
    or ``model_best.pth``), in eval mode on ``device``, and the checkpoint's metadata
    (``args``, ``classes``, ``epoch``, ``miou``)."""
    if not os.path.isfile(path):
        raise SeplError(f"checkpoint not found: {path}", hint="train a model first (`sepl train`) or fix the path")
    from ..safeload import torch_load

    ckpt = torch_load(path, "checkpoint", hint="the file is corrupt or not a sepl checkpoint")
    if not isinstance(ckpt, dict) or "model" not in ckpt or "args" not in ckpt:
        raise SeplError(f"{path} is not a sepl DeepLab checkpoint (no 'model'/'args')")
    args = ckpt["args"]
    num_classes = int(ckpt.get("num_classes") or args["num_classes"])
    # the architecture only: the trained weights replace whatever the builder loads
    model, _ = _quiet_build(args["model"], num_classes, args.get("aux_loss", False))
    model.load_state_dict(ckpt["model"])
    from ..device import resolve_device

    device = resolve_device(device, "DeepLab prediction")
    model.to(device).eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "scheduler", "scaler")}
    return model, meta


def _quiet_build(name: str, num_classes: int, aux_loss: bool):
    import logging

    from .models import build_model

    logger = logging.getLogger("sepl.deeplab")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the random-backbone warning is irrelevant here
    try:
        return build_model(name, num_classes, backbone_weights=None, aux_loss=aux_loss)
    finally:
        logger.setLevel(level)


class Predictor:
    """Label maps from a trained DeepLab.

    ``predict(image)`` maps an (H, W, 3) uint8 RGB image to an (H, W) uint8 label map.
    """

    def __init__(self, model: torch.nn.Module, classes: List[str], mode: str = "whole",
                 crop_size: int = 513, stride: Optional[int] = None, amp: bool = True):
        self.model = model.eval()
        self.classes = list(classes)
        self.mode, self.crop_size, self.stride = mode, crop_size, stride
        self.device = next(model.parameters()).device
        self.amp = amp and self.device.type == "cuda"

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: Optional[str] = None, mode: str = "whole",
                        crop_size: Optional[int] = None, stride: Optional[int] = None) -> "Predictor":
        model, meta = load_checkpoint(path, device)
        args = meta["args"]
        n = int(meta.get("num_classes") or args["num_classes"])
        classes = meta.get("classes") or [f"class_{i}" for i in range(n)]
        return cls(model, classes, mode=mode, crop_size=crop_size or args.get("crop_size", 513),
                   stride=stride, amp=args.get("amp", True))

    @torch.inference_mode()
    def logits(self, image: np.ndarray) -> torch.Tensor:
        """(C, H, W) float logits for an (H, W, 3) uint8 RGB image."""
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise SeplError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        x = normalize_image(image[..., :3]).to(self.device)
        with torch.autocast(device_type="cuda", enabled=self.amp):
            return predict_logits(self.model, x, self.mode, self.crop_size, self.stride).float()

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W) uint8 label map for an (H, W, 3) uint8 RGB image."""
        return self.logits(image).argmax(0).to(torch.uint8).cpu().numpy()
