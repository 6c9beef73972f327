"""Grounded-SAM pseudo-labels: image tags prompt Grounding DINO, its boxes prompt SAM.

``prompts`` (captions and the phrase -> class map), ``detectors`` (Grounding DINO through
groundingdino-py or transformers), ``labelmap`` (painting masks into a label map),
``pipeline`` (the whole chain). No FiftyOne here: see ``sepl.fo.grounded``.
"""

from .detectors import Detections, GroundingDinoPy, HFGroundingDino, RawDetections, build_detector, select_detections
from .labelmap import DEFAULT_RULE, RULES, paint_label_map
from .pipeline import GroundedResult, GroundedSAM
from .prompts import VOC_SUBPROMPTS, Prompt, build_prompt, parse_subprompts

__all__ = [
    "Detections", "GroundingDinoPy", "HFGroundingDino", "RawDetections", "build_detector", "select_detections",
    "DEFAULT_RULE", "RULES", "paint_label_map", "GroundedResult", "GroundedSAM", "VOC_SUBPROMPTS", "Prompt",
    "build_prompt", "parse_subprompts",
]
