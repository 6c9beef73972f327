"""SAM 2 / 2.1 and SAM-HQ automatic masks through transformers' ``Sam2Model`` / ``SamHQModel``.

The grid-of-points pipeline of ``sam_auto.SamAutoMasks`` (``amg.AutoMaskPipeline``'s stages)
with the same parameters and the same filters, in the same order: per crop, a grid of
single-point prompts, three masks per point, predicted-IoU filter (``>``), stability filter
(``>=``, on the logits at crop size), masks touching a crop edge that is not an image edge
dropped, box NMS within a crop, NMS between crops preferring smaller crops, optional
small-region clean-up. Every crop of every image goes through the image encoder in batches;
a point batch is filtered by predicted IoU before its low-resolution logits are upscaled.

Pre- and post-processing are transformers' own: images go through the model's image
processor (SAM 2: squashed to a square; SAM-HQ: longest side, padded), points are scaled as
the processor scales them, low-resolution logits are upscaled as the processor's
``post_process_masks`` does (checked in tests/test_sam2_auto.py). Output: a ``MaskSet``
like every other source, so ``refine`` takes these masks unchanged.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import SeplError
from ..optional import require
from .amg import AutoMaskPipeline
from .runtime import BatchSize, resolve_dtype, with_oom_retry

FAMILY_NAMES = {"sam2": "sam2_auto", "samhq": "samhq_auto"}


# -- the model adapters ---------------------------------------------------------------------

class _Backend:
    """What differs between SAM 2 and SAM-HQ: features, point scaling, upscaling."""

    mask_threshold = 0.0

    def __init__(self, model, processor, dtype: Optional[str] = None):
        self.model = model
        self.processor = processor
        self.image_processor = processor.image_processor
        self.dtype = resolve_dtype(dtype)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def pixel_values(self, images: Sequence[np.ndarray]):
        """(B, 3, S, S) float32 model inputs of HxWx3 uint8 images, as the processor makes them."""
        torch = require("torch")
        enc = self.image_processor(images=[np.ascontiguousarray(im) for im in images], return_tensors="pt")
        return enc["pixel_values"].to(self.device, torch.float32)

    def _autocast(self):
        torch = require("torch")
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def encode(self, images: Sequence[np.ndarray]) -> List[Any]:
        raise NotImplementedError

    def scale_points(self, points: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def decode(self, features, coords):
        raise NotImplementedError

    def upscale(self, low, hw: Tuple[int, int]):
        raise NotImplementedError


class Sam2Backend(_Backend):
    """transformers' ``Sam2Model``: inputs squashed to S x S, three feature levels."""

    family = "sam2"

    def encode(self, images):
        torch = require("torch")
        x = self.pixel_values(images)
        with torch.no_grad(), self._autocast():
            levels = self.model.get_image_embeddings(x)
        levels = [lv.float() for lv in levels]
        return [tuple(lv[i] for lv in levels) for i in range(len(images))]

    def input_size(self) -> int:
        return int(self.image_processor.size["height"])

    def scale_points(self, points, hw):
        # Sam2Processor._normalize_coordinates, op for op: float32 x * (S / W), y * (S / H)
        torch = require("torch")
        s = self.input_size()
        t = torch.as_tensor(points, dtype=torch.float32).clone()
        t[:, 0] = t[:, 0] * (s / hw[1])
        t[:, 1] = t[:, 1] * (s / hw[0])
        return t.numpy()

    def decode(self, features, coords):
        torch = require("torch")
        p = coords.shape[0]
        with torch.no_grad():
            out = self.model(image_embeddings=[f[None] for f in features], input_points=coords[None, :, None, :],
                             input_labels=torch.ones((1, p, 1), dtype=torch.int64, device=coords.device),
                             multimask_output=True)
        return out.pred_masks[0].float(), out.iou_scores[0].float()

    def upscale(self, low, hw):
        # Sam2ImageProcessor.post_process_masks: bilinear from the low-res grid straight to (H, W)
        torch = require("torch")
        return torch.nn.functional.interpolate(low[:, None], tuple(hw), mode="bilinear", align_corners=False)[:, 0]


class SamHQBackend(_Backend):
    """transformers' ``SamHQModel``: longest side to S and padded (SAM 1's transform), HQ features."""

    family = "samhq"

    def input_size(self) -> int:
        return int(self.image_processor.pad_size["height"])

    def resized(self, hw):
        return self.image_processor._get_preprocess_shape(tuple(hw), self.image_processor.size["longest_edge"])

    def encode(self, images):
        torch = require("torch")
        x = self.pixel_values(images)
        with torch.no_grad(), self._autocast():
            emb, inter = self.model.get_image_embeddings(x)
        emb, inter = emb.float(), [e.float() for e in inter]
        return [(emb[i], tuple(e[i] for e in inter)) for i in range(len(images))]

    def scale_points(self, points, hw):
        nh, nw = self.resized(hw)
        return (points * np.array([nw / hw[1], nh / hw[0]])).astype(np.float32)

    def decode(self, features, coords):
        torch = require("torch")
        emb, inter = features
        p = coords.shape[0]
        with torch.no_grad():
            out = self.model(image_embeddings=emb[None], intermediate_embeddings=[e[None] for e in inter],
                             input_points=coords[None, :, None, :],
                             input_labels=torch.ones((1, p, 1), dtype=torch.int64, device=coords.device),
                             multimask_output=True)
        return out.pred_masks[0].float(), out.iou_scores[0].float()

    def upscale(self, low, hw):
        # SamImageProcessor.post_process_masks: to the padded input, cut the padding, to (H, W)
        torch = require("torch")
        f = torch.nn.functional
        s = self.input_size()
        nh, nw = self.resized(hw)
        x = f.interpolate(low[:, None], (s, s), mode="bilinear", align_corners=False)[..., :nh, :nw]
        return f.interpolate(x, tuple(hw), mode="bilinear", align_corners=False)[:, 0]


BACKENDS = {"sam2": Sam2Backend, "samhq": SamHQBackend}


class HFSamAutoMasks(AutoMaskPipeline):
    """Automatic masks of SAM 2 / 2.1 (``family="sam2"``) or SAM-HQ (``family="samhq"``).

    Arguments (as ``SamAutoMasks``'s; defaults are SAM 1's, so a run differs only by model):
      model, processor: a transformers ``Sam2Model`` / ``SamHQModel`` and its processor
        (see ``hf_models.load_hf_sam``).
      points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh,
      stability_score_offset, box_nms_thresh, crop_n_layers, crop_nms_thresh,
      crop_overlap_ratio, crop_n_points_downscale_factor, min_mask_region_area: see
        ``sam_auto.SamAutoMasks``.
      image_batch (int): images (or crops) encoded at once (halved on out-of-memory).
      dtype (str or None): "bfloat16"/"float16" autocast for the image encoder.
      model_name (str): recorded with the masks.
      random_weights (bool): recorded; True when the model is the tiny random one.
    """

    _config_keys = ("model_name", "dtype", "random_weights")

    def __init__(self, model, processor, family: str = "sam2", points_per_side: int = 32,
                 points_per_batch: int = 128, pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7, crop_n_layers: int = 0,
                 crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1, min_mask_region_area: int = 0, image_batch: int = 4,
                 dtype: Optional[str] = None, model_name: str = "", random_weights: bool = False):
        if family not in BACKENDS:
            raise SeplError(f"unknown automatic-mask family '{family}'", hint=f"use one of {', '.join(BACKENDS)}")
        tf = require("transformers", "SAM 2 / SAM-HQ masks")
        expected = {"sam2": tf.Sam2Model, "samhq": tf.SamHQModel}[family]
        if not isinstance(model, expected):
            raise SeplError(f"{FAMILY_NAMES[family]} needs a {expected.__name__}, got {type(model).__name__}",
                            hint=f"load it with sepl.masks.hf_models.load_hf_sam('{family}', ...)")
        if points_per_side < 1 or points_per_batch < 1:
            raise SeplError("points_per_side and points_per_batch must be >= 1")
        self.family = family
        self.backend = BACKENDS[family](model, processor, dtype=dtype)
        self._init_pipeline(points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh,
                            stability_score_offset, box_nms_thresh, crop_n_layers, crop_nms_thresh,
                            crop_overlap_ratio, crop_n_points_downscale_factor, min_mask_region_area)
        self._image_batch = BatchSize(image_batch)
        self.dtype = dtype
        self.model_name = model_name or family
        self.random_weights = bool(random_weights)
        self.name = f"{FAMILY_NAMES[family]}/{self.model_name}"

    @property
    def _config_source(self) -> str:
        return FAMILY_NAMES[self.family]

    @property
    def mask_threshold(self) -> float:
        return self.backend.mask_threshold

    # -- model hooks (the backend's, looked up per call so a test may replace them) -------------

    def _encode(self, crops):
        return with_oom_retry(self.backend.encode, crops, self._image_batch, what="image batch")

    def _predict(self, features, points: np.ndarray, crop_hw: Tuple[int, int]):
        be = self.backend
        return be.decode(features, require("torch").as_tensor(be.scale_points(points, crop_hw), device=be.device))

    def _upscale(self, low, crop_hw: Tuple[int, int]):
        return self.backend.upscale(low, crop_hw)


def build_auto_masks(family: str, model: Optional[str] = None, device: str = "auto", random_weights: bool = False,
                     image_batch: int = 4, dtype: Optional[str] = None, **params) -> HFSamAutoMasks:
    """Load a SAM 2 / SAM-HQ model (see ``hf_models.load_hf_sam``) and wrap it in ``HFSamAutoMasks``."""
    from .hf_models import load_hf_sam

    m, proc, name = load_hf_sam(family, model, device=device, random_weights=random_weights)
    return HFSamAutoMasks(m, proc, family=family, image_batch=image_batch, dtype=dtype, model_name=name,
                          random_weights=random_weights, **params)
