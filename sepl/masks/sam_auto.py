"""SAM automatic masks: the grid-of-points pipeline, batched across images and prompts.

``SamAutoMasks`` has ``segment_anything.SamAutomaticMaskGenerator``'s settings and steps.
What holds:
- ``image_batch=1`` with the stock ``points_per_batch`` (64) runs the stock generator's
  arithmetic in its order: the same masks, in the same order, with the same scores and boxes
  (tested with the box NMS, the crop NMS and the small-region clean-up all changing the result);
- ``image_batch > 1`` encodes several images (and crops) at once; batched matrix products
  round differently (features ~1e-6 apart on some CPUs), so a mask near a threshold may move
  by a pixel and an NMS or filter decision near its threshold may flip: the masks agree up to
  float rounding (same number, each with a stock mask of IoU >= 0.99 in the tests), not bit
  for bit. Another ``points_per_batch`` changes the decoder's batches in the same way.
Faster because:
- the image encoder runs on several images (and crops) at once;
- a batch of point prompts is filtered by predicted IoU *before* its low-resolution
  logits are upscaled to the image (the upscale is per mask, so the kept masks are equal);
- masks stay boolean tensors (no RLE round trip per mask).
The small-region clean-up is segment-anything's own ``remove_small_regions``, mask by mask.
The stages are ``amg.AutoMaskPipeline``'s; this module supplies SAM's encoder and decoder.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..optional import require
from .amg import AutoMaskPipeline
from .amg import clean_small_regions, remove_small_regions_batched  # noqa: F401  (re-exported: they lived here)
from .runtime import ImageEncoder


class SamAutoMasks(AutoMaskPipeline):
    """Automatic masks from a grid of point prompts.

    Arguments (as ``SamAutomaticMaskGenerator``'s):
      sam (Sam): the model.
      points_per_side (int): grid points per side (points_per_side**2 prompts per crop).
      points_per_batch (int): prompts decoded at once (halved on CUDA out-of-memory);
        other sizes round differently in the last float bits (see the module docstring).
      pred_iou_thresh (float): keep masks whose predicted IoU is > this (0 = off).
      stability_score_thresh (float): keep masks whose stability score is >= this (0 = off).
      stability_score_offset (float): logit offset of the stability score.
      box_nms_thresh (float): box IoU of the NMS within a crop.
      crop_n_layers (int): extra layers of crops (layer i has (2**i)**2 crops).
      crop_nms_thresh (float): box IoU of the NMS between crops.
      crop_overlap_ratio (float): overlap of crops in the first layer.
      crop_n_points_downscale_factor (int): points per side shrink by this per layer.
      min_mask_region_area (int): holes and islands smaller than this are removed (0 = off).
      image_batch (int): images (or crops) encoded at once; 1 gives the stock generator's
        output exactly, more gives it up to float rounding.
      dtype (str or None): "bfloat16"/"float16" autocast for the image encoder (GPU).
      model_type (str): recorded with the masks.
    """

    _config_keys = ("model_type", "dtype")
    _config_source = "sam_auto"

    def __init__(self, sam, points_per_side: int = 32, points_per_batch: int = 128,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7,
                 crop_n_layers: int = 0, crop_nms_thresh: float = 0.7,
                 crop_overlap_ratio: float = 512 / 1500, crop_n_points_downscale_factor: int = 1,
                 min_mask_region_area: int = 0, image_batch: int = 4, dtype: Optional[str] = None,
                 model_type: str = "sam"):
        self.sam = sam
        self._init_pipeline(points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh,
                            stability_score_offset, box_nms_thresh, crop_n_layers, crop_nms_thresh,
                            crop_overlap_ratio, crop_n_points_downscale_factor, min_mask_region_area)
        self.model_type = model_type
        self.dtype = dtype
        self.name = f"sam_auto/{model_type}"
        self.encoder = ImageEncoder(sam, batch_size=image_batch, dtype=dtype)  # requires segment_anything

    @property
    def mask_threshold(self) -> float:
        return self.sam.mask_threshold

    # -- model hooks ----------------------------------------------------------------------

    def _encode(self, crops):
        return self.encoder(crops)

    def _predict(self, features, points: np.ndarray, crop_hw: Tuple[int, int]):
        # SamPredictor.predict_torch without its upscale, which runs after the IoU filter
        torch = require("torch")
        sam, dev = self.sam, self.sam.device
        coords = torch.as_tensor(self.encoder.transform.apply_coords(points, crop_hw), device=dev, dtype=torch.float)
        labels = torch.ones(len(points), dtype=torch.int, device=dev)
        sparse, dense = sam.prompt_encoder(points=(coords[:, None], labels[:, None]), boxes=None, masks=None)
        return sam.mask_decoder(image_embeddings=features[None], image_pe=sam.prompt_encoder.get_dense_pe(),
                                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                multimask_output=True)

    def _upscale(self, low, crop_hw: Tuple[int, int]):
        return self.sam.postprocess_masks(low[:, None], self.encoder.input_size(crop_hw), crop_hw)[:, 0]
