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
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..optional import require
from .base import MaskSet, MaskSource
from .runtime import BatchSize, ImageEncoder, check_image, with_oom_retry

log = logging.getLogger(__name__)


class SamAutoMasks(MaskSource):
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

    is_sam = True

    def __init__(self, sam, points_per_side: int = 32, points_per_batch: int = 128,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7,
                 crop_n_layers: int = 0, crop_nms_thresh: float = 0.7,
                 crop_overlap_ratio: float = 512 / 1500, crop_n_points_downscale_factor: int = 1,
                 min_mask_region_area: int = 0, image_batch: int = 4, dtype: Optional[str] = None,
                 model_type: str = "sam"):
        amg = require("segment_anything", "SAM masks").utils.amg
        self.sam = sam
        self.points_per_side = points_per_side
        self.points_per_batch = points_per_batch
        self._point_batch = BatchSize(points_per_batch)
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.model_type = model_type
        self.dtype = dtype
        self.name = f"sam_auto/{model_type}"
        self.point_grids = amg.build_all_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        self.encoder = ImageEncoder(sam, batch_size=image_batch, dtype=dtype)

    def config(self) -> Dict[str, Any]:
        keys = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
                "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_overlap_ratio",
                "crop_n_points_downscale_factor", "min_mask_region_area", "model_type", "dtype")
        return dict({k: getattr(self, k) for k in keys}, source="sam_auto")

    def generate(self, image: np.ndarray) -> MaskSet:
        """Masks of one HxWx3 uint8 RGB image."""
        return self.generate_batch([image])[0]

    def generate_batch(self, images: Sequence[np.ndarray]) -> List[MaskSet]:
        """Masks of each image; all crops of all images go through the encoder in batches."""
        amg = require("segment_anything").utils.amg
        images = [check_image(im) for im in images]
        jobs = []  # (image index, crop box, layer)
        for i, im in enumerate(images):
            boxes, layers = amg.generate_crop_boxes(im.shape[:2], self.crop_n_layers, self.crop_overlap_ratio)
            jobs += [(i, b, l) for b, l in zip(boxes, layers)]
        crops = [images[i][b[1]:b[3], b[0]:b[2]] for i, b, _ in jobs]
        feats = self.encoder(crops)
        per_image: List[List[Dict[str, Any]]] = [[] for _ in images]
        for (i, box, layer), crop, f in zip(jobs, crops, feats):
            per_image[i].append(self._process_crop(f, crop.shape[:2], box, layer, images[i].shape[:2]))
        return [self._finish(parts, im.shape[:2]) for parts, im in zip(per_image, images)]

    # -- stages ---------------------------------------------------------------------------

    def _process_crop(self, features, crop_hw, crop_box, layer, orig_hw) -> Dict[str, Any]:
        torch = require("torch")
        from torchvision.ops.boxes import batched_nms

        amg = require("segment_anything").utils.amg
        points = self.point_grids[layer] * np.array(crop_hw)[None, ::-1]
        batches = with_oom_retry(lambda p: [self._process_batch(features, p, crop_hw, crop_box, orig_hw)],
                                 points, self._point_batch, what="point batch")
        data = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
        keep = batched_nms(data["boxes"].float(), data["iou_preds"], torch.zeros_like(data["iou_preds"]),
                           iou_threshold=self.box_nms_thresh)
        data = {k: v[keep] for k, v in data.items()}
        data["boxes"] = amg.uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = amg.uncrop_points(data["points"], crop_box)
        data["masks"] = amg.uncrop_masks(data["masks"], crop_box, *orig_hw)
        data["crop_boxes"] = torch.tensor([crop_box], dtype=torch.float32).expand(len(keep), 4)
        return data

    def _process_batch(self, features, points: np.ndarray, crop_hw, crop_box, orig_hw) -> Dict[str, Any]:
        torch = require("torch")
        amg = require("segment_anything").utils.amg
        sam, dev = self.sam, self.sam.device
        coords = torch.as_tensor(self.encoder.transform.apply_coords(points, crop_hw), device=dev, dtype=torch.float)
        labels = torch.ones(len(points), dtype=torch.int, device=dev)
        with torch.no_grad():
            sparse, dense = sam.prompt_encoder(points=(coords[:, None], labels[:, None]), boxes=None, masks=None)
            low, iou = sam.mask_decoder(image_embeddings=features[None], image_pe=sam.prompt_encoder.get_dense_pe(),
                                        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                        multimask_output=True)
        low, iou = low.flatten(0, 1), iou.flatten(0, 1)
        pts = torch.as_tensor(points, dtype=torch.float32).repeat_interleave(3, 0).to(dev)
        keep = iou > self.pred_iou_thresh if self.pred_iou_thresh > 0 else torch.ones_like(iou, dtype=torch.bool)
        low, iou, pts = low[keep], iou[keep], pts[keep]
        with torch.no_grad():
            logits = sam.postprocess_masks(low[:, None], self.encoder.input_size(crop_hw), crop_hw)[:, 0]
        stab = amg.calculate_stability_score(logits, sam.mask_threshold, self.stability_score_offset)
        if self.stability_score_thresh > 0:
            keep = stab >= self.stability_score_thresh
            logits, iou, pts, stab = logits[keep], iou[keep], pts[keep], stab[keep]
        masks = logits > sam.mask_threshold
        boxes = amg.batched_mask_to_box(masks)
        keep = ~amg.is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_hw[1], orig_hw[0]])
        return dict(masks=masks[keep], iou_preds=iou[keep], points=pts[keep], stability_score=stab[keep],
                    boxes=boxes[keep])

    def _finish(self, parts: List[Dict[str, Any]], orig_hw) -> MaskSet:
        torch = require("torch")
        from torchvision.ops.boxes import batched_nms, box_area

        data = {k: torch.cat([p[k].to(parts[0][k].device) for p in parts]) for k in parts[0]}
        if len(parts) > 1:  # duplicates between crops: prefer masks from smaller crops
            scores = (1 / box_area(data["crop_boxes"])).to(data["boxes"].device)
            keep = batched_nms(data["boxes"].float(), scores, torch.zeros_like(scores),
                               iou_threshold=self.crop_nms_thresh)
            data = {k: v[keep] for k, v in data.items()}
        out = {k: v.detach().cpu().numpy() for k, v in data.items()}
        if self.min_mask_region_area > 0 and len(out["masks"]):
            out = remove_small_regions_batched(out, self.min_mask_region_area,
                                               max(self.box_nms_thresh, self.crop_nms_thresh))
        masks = out["masks"]
        return MaskSet(masks, source=self.name,
                       area=masks.sum((1, 2)).astype(np.int64),
                       predicted_iou=out["iou_preds"].astype(np.float32),
                       stability_score=out["stability_score"].astype(np.float32),
                       boxes=out["boxes"].astype(np.float32),
                       point_coords=out["points"].astype(np.float32),
                       crop_boxes=out["crop_boxes"].astype(np.float32))


def clean_small_regions(masks: np.ndarray, min_area: int) -> Tuple[np.ndarray, np.ndarray]:
    """segment-anything's ``remove_small_regions`` ("holes", then "islands") on every mask.

    Its own function, mask by mask, so cv2's numbering decides which of several equally large
    small islands a mask keeps, as there (labelling all masks at once, with scipy or with one
    cv2 call over the stacked masks, measured no faster than this loop).

    Arguments:
      masks (np.ndarray): NxHxW bool.
      min_area (int): area threshold in pixels.
    Returns:
      masks (np.ndarray): NxHxW bool, cleaned.
      changed (np.ndarray): N bool, whether either step changed the mask.
    """
    amg = require("segment_anything").utils.amg
    out = np.zeros(np.shape(masks), bool)
    changed = np.zeros(len(masks), bool)
    for k, mask in enumerate(masks):
        mask, holes = amg.remove_small_regions(np.asarray(mask, bool), min_area, mode="holes")
        out[k], islands = amg.remove_small_regions(mask, min_area, mode="islands")
        changed[k] = holes or islands
    return out, changed


def remove_small_regions_batched(data: Dict[str, np.ndarray], min_area: int, nms_thresh: float) -> Dict[str, np.ndarray]:
    """Fill holes and drop islands smaller than ``min_area`` in every mask, then box NMS.

    Same result as ``SamAutomaticMaskGenerator.postprocess_small_regions`` (unchanged masks
    are preferred by the NMS; boxes recomputed for changed masks), without the RLE round trip.
    """
    torch = require("torch")
    from torchvision.ops.boxes import batched_nms

    amg = require("segment_anything").utils.amg
    masks, changed = clean_small_regions(data["masks"], min_area)
    n = len(masks)
    boxes = amg.batched_mask_to_box(torch.as_tensor(masks))
    scores = torch.as_tensor((~changed).astype(np.float32))
    keep = batched_nms(boxes.float(), scores, torch.zeros(n), iou_threshold=nms_thresh).numpy()
    out = {k: v[keep] for k, v in data.items()}
    out["masks"] = masks[keep]
    out["boxes"] = np.where(changed[keep, None], boxes.numpy()[keep], data["boxes"][keep])
    return out
