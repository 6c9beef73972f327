"""From one SAM 3 forward pass (one image, one concept prompt) to kept instances.

SAM 3 returns, per prompt, Q query slots: a mask logit map (Q, h, w), a box (Q, 4, normalised
XYXY), a per-query logit and one presence logit saying whether the concept is in the image at
all. As in ``Sam3Processor.post_process_instance_segmentation``: score = sigmoid(query logit) x
sigmoid(presence logit); masks = bilinear resize of sigmoid(mask logits) to the image, then
``> mask_threshold``; boxes scaled by (W, H). Added here: a threshold on the presence score
alone (an absent concept yields nothing, however confident a query is), and empty masks
dropped (they would paint nothing and confuse SEPL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

import numpy as np

from ..optional import require


@dataclass
class Instances:
    """Instances of one concept in one image.

    Attributes:
        masks: (K, H, W) bool.
        scores: (K,) float32, sigmoid(query) x sigmoid(presence).
        boxes: (K, 4) float32 XYXY pixels (SAM 3's predicted box, not the mask's).
        presence: float, sigmoid(presence logit) of the concept.
        counts: how many queries were dropped, and why.
    """

    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    presence: float
    counts: Dict[str, int] = field(default_factory=dict)


def select_instances(pred_logits, presence_logit, pred_masks, pred_boxes, hw: Tuple[int, int],
                     score_threshold: float = 0.5, presence_threshold: float = 0.0,
                     mask_threshold: float = 0.5) -> Instances:
    """Kept instances of one (image, prompt) pair.

    Args:
        pred_logits: (Q,) query logits; presence_logit: (1,) or scalar (None: presence 1).
        pred_masks: (Q, h, w) mask logits; pred_boxes: (Q, 4) normalised XYXY.
        hw: (H, W) of the image.
        score_threshold: keep queries whose score is > this (Sam3Processor's ``threshold``).
        presence_threshold: keep nothing unless sigmoid(presence) is > this (0 = off).
        mask_threshold: on the resized sigmoid mask (Sam3Processor's ``mask_threshold``).
    """
    torch = require("torch", "SAM 3")
    h, w = int(hw[0]), int(hw[1])
    q = int(pred_logits.shape[0])
    scores = pred_logits.float().sigmoid()
    presence = 1.0
    if presence_logit is not None:
        p = presence_logit.float().reshape(-1)[:1].sigmoid()
        scores = scores * p
        presence = float(p)
    counts = {"queries": q}
    if presence_threshold > 0 and not presence > presence_threshold:
        counts["absent"] = 1
        counts["below_presence_threshold"] = q
        return Instances(np.zeros((0, h, w), bool), np.zeros(0, np.float32), np.zeros((0, 4), np.float32),
                         presence, counts)
    keep = scores > score_threshold
    counts["below_score_threshold"] = int((~keep).sum())
    masks = pred_masks[keep].float().sigmoid()
    if len(masks):
        masks = torch.nn.functional.interpolate(masks[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    masks = (masks > mask_threshold).reshape(-1, h, w)
    boxes = pred_boxes[keep].float() * torch.tensor([w, h, w, h], dtype=torch.float32, device=pred_boxes.device)
    nonempty = masks.flatten(1).any(1)
    counts["empty_mask"] = int((~nonempty).sum())
    counts["kept"] = int(nonempty.sum())
    return Instances(masks[nonempty].cpu().numpy(), scores[keep][nonempty].cpu().numpy().astype(np.float32),
                     boxes[nonempty].cpu().numpy().astype(np.float32), presence, counts)
