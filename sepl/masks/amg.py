"""The grid-of-points automatic-mask pipeline, shared by SAM (``sam_auto``) and SAM 2 / SAM-HQ (``sam2_auto``).

``AutoMaskPipeline`` runs ``SamAutomaticMaskGenerator``'s stages in its order: crop boxes per
image, every crop of every image encoded in batches, then per crop a grid of single-point
prompts decoded in batches (predicted-IoU filter ``>`` before the low-resolution logits are
upscaled, stability filter ``>=``, masks near a crop edge that is not an image edge dropped),
box NMS within the crop, NMS between crops preferring smaller crops, optional small-region
clean-up. A subclass supplies only the model: ``_encode``, ``_predict``, ``_upscale`` and
``mask_threshold``.

The helpers compute what ``segment_anything.utils.amg``'s functions of the same purpose
compute, value for value (tests/test_masks_auto.py and tests/test_sam2_auto.py compare the
pipeline with the stock generator and with a reference built from those functions), so the
SAM 2 / SAM-HQ path does not need segment-anything, except for the small-region clean-up,
which runs segment-anything's own ``remove_small_regions``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..optional import require
from .base import MaskSet, MaskSource
from .runtime import BatchSize, check_image, with_oom_retry

# The settings every automatic source records, in ``config()``'s order.
AMG_KEYS = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
            "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_overlap_ratio",
            "crop_n_points_downscale_factor", "min_mask_region_area")


# -- grids and crops --------------------------------------------------------------------------

def point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) float64 points (x, y) in [0, 1]^2 at the centres of an n x n grid, row by row."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def point_grids(n_per_side: int, n_layers: int, downscale: int) -> List[np.ndarray]:
    """One ``point_grid`` per crop layer; layer i has ``int(n_per_side / downscale**i)`` points per side."""
    return [point_grid(int(n_per_side / downscale ** i)) for i in range(n_layers + 1)]


def crop_boxes(hw: Tuple[int, int], n_layers: int, overlap_ratio: float) -> Tuple[List[List[int]], List[int]]:
    """XYXY int crop boxes (the whole image first) and the layer of each; layer i has (2**i)**2 crops."""
    h, w = hw
    short = min(h, w)
    boxes, layers = [[0, 0, w, h]], [0]
    for i in range(n_layers):
        n = 2 ** (i + 1)
        overlap = int(overlap_ratio * short * (2 / n))
        cw = int(math.ceil((overlap * (n - 1) + w) / n))
        ch = int(math.ceil((overlap * (n - 1) + h) / n))
        for x0 in [int((cw - overlap) * k) for k in range(n)]:  # x outer, as itertools.product in SAM
            for y0 in [int((ch - overlap) * k) for k in range(n)]:
                boxes.append([x0, y0, min(x0 + cw, w), min(y0 + ch, h)])
                layers.append(i + 1)
    return boxes, layers


# -- per-mask numbers ---------------------------------------------------------------------------

def stability_score(logits, threshold: float, offset: float):
    """(N,) float32 IoU of the (N, H, W) float logits' masks at ``threshold + offset`` and ``- offset``.

    The first mask lies inside the second, so the IoU is a ratio of pixel counts.
    """
    torch = require("torch")
    # rows counted in int16 (cheaper to reduce than int32 on CPU) where a row cannot overflow it
    row = torch.int16 if logits.shape[-1] < 2 ** 15 else torch.int32
    inter = (logits > (threshold + offset)).sum(-1, dtype=row).sum(-1, dtype=torch.int32)
    union = (logits > (threshold - offset)).sum(-1, dtype=row).sum(-1, dtype=torch.int32)
    return inter / union


def mask_boxes(masks):
    """(N, 4) int64 XYXY boxes (inclusive max, zeros for empty masks) of (N, H, W) bool masks.

    No masks: (0, 4) float32 zeros, as segment-anything's ``batched_mask_to_box``.
    """
    torch = require("torch")
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros((0, 4), device=masks.device)
    # amax, not any: several times faster over the last axis on CPU
    rows, cols = masks.amax(-1), masks.amax(-2)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y1 = (rows * ar_h).amax(-1)
    y0 = torch.where(rows, ar_h, h).amin(-1)
    x1 = (cols * ar_w).amax(-1)
    x0 = torch.where(cols, ar_w, w).amin(-1)
    empty = (x1 < x0) | (y1 < y0)
    out = torch.stack([x0, y0, x1, y1], 1)
    return torch.where(empty[:, None], torch.zeros_like(out), out)


def near_crop_edge(boxes, crop_box: Sequence[int], image_box: Sequence[int], atol: float = 20.0):
    """(N,) bool: (N, 4) XYXY boxes in crop coordinates within ``atol`` of a crop edge that is not an image edge."""
    torch = require("torch")
    cb = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    ib = torch.as_tensor(image_box, dtype=torch.float, device=boxes.device)
    b = uncrop_boxes(boxes, crop_box).float()
    near_crop = torch.isclose(b, cb[None], atol=atol, rtol=0)
    near_image = torch.isclose(b, ib[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(1)


# -- crop to image coordinates ------------------------------------------------------------------

def uncrop_boxes(boxes, crop_box: Sequence[int]):
    """(N, 4) XYXY boxes shifted from crop to image coordinates (dtype as torch promotes it with int64)."""
    torch = require("torch")
    x0, y0 = crop_box[0], crop_box[1]
    return boxes + torch.tensor([[x0, y0, x0, y0]], device=boxes.device)


def uncrop_points(points, crop_box: Sequence[int]):
    """(N, 2) float32 points (x, y) shifted from crop to image coordinates."""
    torch = require("torch")
    return points + torch.tensor([[crop_box[0], crop_box[1]]], device=points.device)


def uncrop_masks(masks, crop_box: Sequence[int], h: int, w: int):
    """(N, h, w) bool masks of the full image from (N, crop h, crop w) masks of a crop (padded with False)."""
    torch = require("torch")
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) == (0, 0, w, h):
        return masks
    return torch.nn.functional.pad(masks, (x0, w - x1, y0, h - y1), value=False)


# -- small-region clean-up ----------------------------------------------------------------------

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
    amg = require("segment_anything", "the small-region clean-up (min_mask_region_area)").utils.amg
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
    ``data`` holds aligned arrays, ``masks`` NxHxW bool and ``boxes`` Nx4 among them.
    """
    torch = require("torch")
    from torchvision.ops.boxes import batched_nms

    masks, changed = clean_small_regions(data["masks"], min_area)
    n = len(masks)
    boxes = mask_boxes(torch.as_tensor(masks))
    scores = torch.as_tensor((~changed).astype(np.float32))
    keep = batched_nms(boxes.float(), scores, torch.zeros(n), iou_threshold=nms_thresh).numpy()
    out = {k: v[keep] for k, v in data.items()}
    out["masks"] = masks[keep]
    out["boxes"] = np.where(changed[keep, None], boxes.numpy()[keep], data["boxes"][keep])
    return out


# -- the pipeline -------------------------------------------------------------------------------

class AutoMaskPipeline(MaskSource):
    """``SamAutomaticMaskGenerator``'s stages over batches of images; the model comes from the hooks.

    A subclass calls ``_init_pipeline`` with the settings (see ``sam_auto.SamAutoMasks``) and
    implements ``_encode`` (crops -> features), ``_predict`` (features, points -> low-res logits
    and predicted IoUs), ``_upscale`` (low-res logits -> logits at crop size) and
    ``mask_threshold``; ``_config_keys`` and ``_config_source`` say what ``config()`` records.
    """

    is_sam = True
    mask_threshold: float = 0.0
    _config_keys: Tuple[str, ...] = ()
    _config_source: str = ""

    def _init_pipeline(self, points_per_side: int, points_per_batch: int, pred_iou_thresh: float,
                       stability_score_thresh: float, stability_score_offset: float, box_nms_thresh: float,
                       crop_n_layers: int, crop_nms_thresh: float, crop_overlap_ratio: float,
                       crop_n_points_downscale_factor: int, min_mask_region_area: int) -> None:
        self.points_per_side = points_per_side
        self.points_per_batch = points_per_batch
        self._point_batch = BatchSize(points_per_batch)  # shrinks on out-of-memory, for later crops too
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.point_grids = point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)

    # -- model hooks --------------------------------------------------------------------------

    def _encode(self, crops: List[np.ndarray]) -> List[Any]:
        """Image features of each (h, w, 3) uint8 crop, in batches (the features ``_predict`` takes)."""
        raise NotImplementedError

    def _predict(self, features: Any, points: np.ndarray, crop_hw: Tuple[int, int]):
        """Low-res logits (P, M, h', w') float32 and predicted IoUs (P, M) float32, on the device,
        for (P, 2) float64 points (x, y) in crop pixels: M masks per point."""
        raise NotImplementedError

    def _upscale(self, low, crop_hw: Tuple[int, int]):
        """(N, H, W) float32 logits at crop size of (N, h', w') low-res logits."""
        raise NotImplementedError

    # -- public --------------------------------------------------------------------------------

    def config(self) -> Dict[str, Any]:
        keys = AMG_KEYS + self._config_keys
        return dict({k: getattr(self, k) for k in keys}, source=self._config_source)

    def generate(self, image: np.ndarray) -> MaskSet:
        """Masks of one HxWx3 uint8 RGB image."""
        return self.generate_batch([image])[0]

    def generate_batch(self, images: Sequence[np.ndarray]) -> List[MaskSet]:
        """Masks of each image; all crops of all images go through the encoder in batches."""
        images = [check_image(im) for im in images]
        jobs = []  # (image index, crop box, layer)
        for i, im in enumerate(images):
            boxes, layers = crop_boxes(im.shape[:2], self.crop_n_layers, self.crop_overlap_ratio)
            jobs += [(i, b, l) for b, l in zip(boxes, layers)]
        crops = [images[i][b[1]:b[3], b[0]:b[2]] for i, b, _ in jobs]
        feats = self._encode(crops)
        per_image: List[List[Dict[str, Any]]] = [[] for _ in images]
        for (i, box, layer), crop, f in zip(jobs, crops, feats):
            per_image[i].append(self._process_crop(f, crop.shape[:2], box, layer, images[i].shape[:2]))
        return [self._finish(parts, im.shape[:2]) for parts, im in zip(per_image, images)]

    # -- stages --------------------------------------------------------------------------------

    def _process_crop(self, features, crop_hw, crop_box, layer, orig_hw) -> Dict[str, Any]:
        """The kept masks of one crop, in image coordinates: aligned tensors ``masks`` (N, H, W)
        bool, ``iou_preds``, ``stability_score`` (N,), ``points`` (N, 2), ``boxes``, ``crop_boxes`` (N, 4)."""
        torch = require("torch")
        from torchvision.ops.boxes import batched_nms

        points = self.point_grids[layer] * np.array(crop_hw)[None, ::-1]
        batches = with_oom_retry(lambda p: [self._process_batch(features, p, crop_hw, crop_box, orig_hw)],
                                 points, self._point_batch, what="point batch")
        data = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
        keep = batched_nms(data["boxes"].float(), data["iou_preds"], torch.zeros_like(data["iou_preds"]),
                           iou_threshold=self.box_nms_thresh)
        data = {k: v[keep] for k, v in data.items()}
        data["boxes"] = uncrop_boxes(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["masks"] = uncrop_masks(data["masks"], crop_box, *orig_hw)
        data["crop_boxes"] = torch.tensor([crop_box], dtype=torch.float32).expand(len(keep), 4)
        return data

    def _process_batch(self, features, points: np.ndarray, crop_hw, crop_box, orig_hw) -> Dict[str, Any]:
        """One batch of point prompts through the decoder and the filters (crop coordinates)."""
        torch = require("torch")
        with torch.no_grad():
            low, iou = self._predict(features, points, crop_hw)
            low, iou = low.flatten(0, 1), iou.flatten(0, 1)
            pts = torch.as_tensor(points, dtype=torch.float32, device=low.device).repeat_interleave(
                low.shape[0] // len(points), 0)
            # filtered before the upscale, which is per mask: the kept masks are the same, sooner
            keep = iou > self.pred_iou_thresh if self.pred_iou_thresh > 0 else torch.ones_like(iou, dtype=torch.bool)
            low, iou, pts = low[keep], iou[keep], pts[keep]
            logits = self._upscale(low, crop_hw)
        stab = stability_score(logits, self.mask_threshold, self.stability_score_offset)
        if self.stability_score_thresh > 0:
            keep = stab >= self.stability_score_thresh
            logits, iou, pts, stab = logits[keep], iou[keep], pts[keep], stab[keep]
        masks = logits > self.mask_threshold
        boxes = mask_boxes(masks)
        keep = ~near_crop_edge(boxes, crop_box, [0, 0, orig_hw[1], orig_hw[0]])
        return dict(masks=masks[keep], iou_preds=iou[keep], points=pts[keep], stability_score=stab[keep],
                    boxes=boxes[keep])

    def _finish(self, parts: List[Dict[str, Any]], orig_hw) -> MaskSet:
        """The ``MaskSet`` of one image from its crops' ``_process_crop`` results."""
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
