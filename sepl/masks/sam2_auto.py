"""SAM 2 / 2.1 and SAM-HQ automatic masks through transformers' ``Sam2Model`` / ``SamHQModel``.

The grid-of-points pipeline of ``sam_auto.SamAutoMasks`` with the same parameters and the
same filters, in the same order: per crop, a grid of single-point prompts, three masks per
point, predicted-IoU filter (``>``), stability filter (``>=``, on the logits at crop size),
masks touching a crop edge that is not an image edge dropped, box NMS within a crop, NMS
between crops preferring smaller crops, optional small-region clean-up. Every crop of every
image goes through the image encoder in batches; a point batch is filtered by predicted
IoU before its low-resolution logits are upscaled.

Pre- and post-processing are transformers' own: images go through the model's image
processor (SAM 2: squashed to a square; SAM-HQ: longest side, padded), points are scaled as
the processor scales them, low-resolution logits are upscaled as the processor's
``post_process_masks`` does (checked in tests/test_sam2_auto.py). Output: a ``MaskSet``
like every other source, so ``refine`` takes these masks unchanged.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import SeplError
from ..optional import require
from .base import MaskSet, MaskSource
from .runtime import BatchSize, check_image, resolve_dtype, with_oom_retry

FAMILY_NAMES = {"sam2": "sam2_auto", "samhq": "samhq_auto"}


# -- small pure helpers (same maths as segment_anything.utils.amg, without the dependency) ----

def point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) float64 points in [0, 1]^2 at the centres of an n x n grid (x, y)."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def crop_boxes(hw: Tuple[int, int], n_layers: int, overlap_ratio: float) -> Tuple[List[List[int]], List[int]]:
    """XYXY crop boxes (the whole image first) and the layer of each, as SAM's pipeline makes them."""
    h, w = hw
    short = min(h, w)
    boxes, layers = [[0, 0, w, h]], [0]
    for i in range(n_layers):
        n = 2 ** (i + 1)
        overlap = int(overlap_ratio * short * (2 / n))
        cw = int(np.ceil((overlap * (n - 1) + w) / n))
        ch = int(np.ceil((overlap * (n - 1) + h) / n))
        for x0 in [int((cw - overlap) * k) for k in range(n)]:  # x outer, as itertools.product in SAM
            for y0 in [int((ch - overlap) * k) for k in range(n)]:
                boxes.append([x0, y0, min(x0 + cw, w), min(y0 + ch, h)])
                layers.append(i + 1)
    return boxes, layers


def stability_score(logits, threshold: float, offset: float):
    """(N,) IoU between the masks at ``threshold + offset`` and ``threshold - offset``."""
    torch = require("torch")
    inter = (logits > (threshold + offset)).sum((-1, -2), dtype=torch.int32)
    union = (logits > (threshold - offset)).sum((-1, -2), dtype=torch.int32)
    return inter / union


def mask_boxes(masks):
    """(N, 4) XYXY boxes (inclusive max, zeros for empty masks) of (N, H, W) bool masks."""
    torch = require("torch")
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros((0, 4), device=masks.device)
    rows, cols = masks.any(2), masks.any(1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y1 = (rows * ar_h).max(1).values
    y0 = torch.where(rows, ar_h, h).min(1).values
    x1 = (cols * ar_w).max(1).values
    x0 = torch.where(cols, ar_w, w).min(1).values
    empty = (x1 < x0) | (y1 < y0)
    out = torch.stack([x0, y0, x1, y1], 1)
    return torch.where(empty[:, None], torch.zeros_like(out), out)


def near_crop_edge(boxes, crop_box: Sequence[int], image_box: Sequence[int], atol: float = 20.0):
    """(N,) bool: boxes (in crop coordinates) touching a crop edge that is not an image edge."""
    torch = require("torch")
    cb = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    ib = torch.as_tensor(image_box, dtype=torch.float, device=boxes.device)
    b = boxes.float() + torch.tensor([crop_box[0], crop_box[1]] * 2, device=boxes.device)
    near_crop = torch.isclose(b, cb[None], atol=atol, rtol=0)
    near_image = torch.isclose(b, ib[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(1)


def uncrop_masks(masks, crop_box: Sequence[int], h: int, w: int):
    torch = require("torch")
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) == (0, 0, w, h):
        return masks
    return torch.nn.functional.pad(masks, (x0, w - x1, y0, h - y1), value=False)


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


class HFSamAutoMasks(MaskSource):
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

    is_sam = True

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
        self.points_per_side = points_per_side
        self.points_per_batch = points_per_batch
        self._point_batch = BatchSize(points_per_batch)
        self._image_batch = BatchSize(image_batch)
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.dtype = dtype
        self.model_name = model_name or family
        self.random_weights = bool(random_weights)
        self.name = f"{FAMILY_NAMES[family]}/{self.model_name}"
        self.point_grids = [point_grid(int(points_per_side / crop_n_points_downscale_factor ** i))
                            for i in range(crop_n_layers + 1)]

    def config(self) -> Dict[str, Any]:
        keys = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
                "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_overlap_ratio",
                "crop_n_points_downscale_factor", "min_mask_region_area", "model_name", "dtype", "random_weights")
        return dict({k: getattr(self, k) for k in keys}, source=FAMILY_NAMES[self.family])

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
        feats = with_oom_retry(self.backend.encode, crops, self._image_batch, what="image batch")
        per_image: List[List[Dict[str, Any]]] = [[] for _ in images]
        for (i, box, layer), crop, f in zip(jobs, crops, feats):
            per_image[i].append(self._process_crop(f, crop.shape[:2], box, layer, images[i].shape[:2]))
        return [self._finish(parts, im.shape[:2]) for parts, im in zip(per_image, images)]

    # -- stages ---------------------------------------------------------------------------

    def _process_crop(self, features, crop_hw, crop_box, layer, orig_hw) -> Dict[str, Any]:
        torch = require("torch")
        from torchvision.ops.boxes import batched_nms

        points = self.point_grids[layer] * np.array(crop_hw)[None, ::-1]
        batches = with_oom_retry(lambda p: [self._process_batch(features, p, crop_hw, crop_box, orig_hw)],
                                 points, self._point_batch, what="point batch")
        data = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
        keep = batched_nms(data["boxes"].float(), data["iou_preds"], torch.zeros_like(data["iou_preds"]),
                           iou_threshold=self.box_nms_thresh)
        data = {k: v[keep] for k, v in data.items()}
        off = torch.tensor([crop_box[0], crop_box[1]], device=data["boxes"].device)
        data["boxes"] = data["boxes"] + off.repeat(2)
        data["points"] = data["points"] + off.to(data["points"].dtype)
        data["masks"] = uncrop_masks(data["masks"], crop_box, *orig_hw)
        data["crop_boxes"] = torch.tensor([crop_box], dtype=torch.float32).expand(len(keep), 4)
        return data

    def _process_batch(self, features, points: np.ndarray, crop_hw, crop_box, orig_hw) -> Dict[str, Any]:
        torch = require("torch")
        be = self.backend
        dev = be.device
        coords = torch.as_tensor(be.scale_points(points, crop_hw), device=dev)
        low, iou = be.decode(features, coords)
        low, iou = low.flatten(0, 1), iou.flatten(0, 1)
        pts = torch.as_tensor(points, dtype=torch.float32, device=dev).repeat_interleave(low.shape[0] // len(points), 0)
        keep = iou > self.pred_iou_thresh if self.pred_iou_thresh > 0 else torch.ones_like(iou, dtype=torch.bool)
        low, iou, pts = low[keep], iou[keep], pts[keep]
        logits = be.upscale(low, crop_hw)
        stab = stability_score(logits, be.mask_threshold, self.stability_score_offset)
        if self.stability_score_thresh > 0:
            keep = stab >= self.stability_score_thresh
            logits, iou, pts, stab = logits[keep], iou[keep], pts[keep], stab[keep]
        masks = logits > be.mask_threshold
        boxes = mask_boxes(masks)
        keep = ~near_crop_edge(boxes, crop_box, [0, 0, orig_hw[1], orig_hw[0]])
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
            from .sam_auto import remove_small_regions_batched

            out = remove_small_regions_batched(out, self.min_mask_region_area,
                                               max(self.box_nms_thresh, self.crop_nms_thresh))
        masks = out["masks"].astype(bool)
        return MaskSet(masks, source=self.name,
                       area=masks.sum((1, 2)).astype(np.int64),
                       predicted_iou=out["iou_preds"].astype(np.float32),
                       stability_score=out["stability_score"].astype(np.float32),
                       boxes=out["boxes"].astype(np.float32),
                       point_coords=out["points"].astype(np.float32),
                       crop_boxes=out["crop_boxes"].astype(np.float32))


def build_auto_masks(family: str, model: Optional[str] = None, device: str = "auto", random_weights: bool = False,
                     image_batch: int = 4, dtype: Optional[str] = None, **params) -> HFSamAutoMasks:
    """Load a SAM 2 / SAM-HQ model (see ``hf_models.load_hf_sam``) and wrap it in ``HFSamAutoMasks``."""
    from .hf_models import load_hf_sam

    m, proc, name = load_hf_sam(family, model, device=device, random_weights=random_weights)
    return HFSamAutoMasks(m, proc, family=family, image_batch=image_batch, dtype=dtype, model_name=name,
                          random_weights=random_weights, **params)
