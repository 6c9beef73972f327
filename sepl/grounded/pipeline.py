"""Grounded-SAM pseudo-labels: image-level labels -> caption -> boxes -> SAM masks -> label map."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import SeplError
from .detectors import BoxPrompter, Detections, select_detections
from .labelmap import DEFAULT_RULE, RULES, paint_label_map
from .prompts import PRESETS, Prompt, build_prompt, merge_subprompts


@dataclass
class GroundedResult:
    """What the pipeline made of one image.

    Attributes:
        label: (H, W) uint8 label map (0 background, 255 only with ``ignore_conflicts``).
        detections: the boxes kept, with phrase, class and score, and the drop counts.
        masks: (K, H, W) bool, SAM's mask for each kept box.
        mask_scores: (K,) float32, SAM's predicted IoU of each mask.
        prompt: the caption used.
        warnings: why the image came out all background, or why boxes were dropped.
    """

    label: np.ndarray
    detections: Detections
    masks: np.ndarray
    mask_scores: np.ndarray
    prompt: Prompt
    warnings: List[str] = field(default_factory=list)

    @property
    def counts(self) -> Dict[str, int]:
        return self.detections.counts


class GroundedSAM:
    """The Grounded-SAM pseudo-label pipeline (SPEC section 2).

    Args:
        detector: a ``BoxPrompter`` (see ``detectors.build_detector``).
        segmenter: anything with ``predict_batch(images, boxes) -> [(masks, scores)]``,
            e.g. ``sepl.masks.sam_box.BoxPromptedSAM(sam, multimask=False)``.
        class_names: all class names, index 0 = background.
        preset: ``"voc"`` (class-index order + the reference's VOC sub-prompts), ``"coco"``
            (alphabetical, no sub-prompts) or ``"none"``.
        subprompts: ``{class: [phrases]}`` added to the preset's.
        box_threshold, text_threshold: see ``detectors.select_detections`` (0.3 / 0.25).
        rule, dedup_iou, ignore_conflicts: see ``labelmap.paint_label_map``.
        separator: joins the phrases of the caption.
    """

    def __init__(self, detector: BoxPrompter, segmenter, class_names: Sequence[str], preset: str = "voc",
                 subprompts: Optional[Mapping[str, Iterable[str]]] = None, box_threshold: float = 0.3,
                 text_threshold: float = 0.25, rule: str = DEFAULT_RULE, dedup_iou: Optional[float] = 0.8,
                 ignore_conflicts: bool = False, separator: str = "."):
        if preset not in PRESETS:
            raise SeplError(f"unknown prompt preset '{preset}'", hint=f"use one of {list(PRESETS)}")
        if rule not in RULES:
            raise SeplError(f"unknown painting rule '{rule}'", hint=f"use one of {RULES}")
        if not 0 <= box_threshold <= 1 or not 0 <= text_threshold <= 1:
            raise SeplError(f"thresholds must lie in [0, 1], got box {box_threshold}, text {text_threshold}")
        self.detector = detector
        self.segmenter = segmenter
        self.class_names = list(class_names)
        names = {str(n).strip().lower() for n in self.class_names}
        # the preset's defaults only for the classes this label set has (VOC's tree on COCO is a no-op)
        defaults = {k: v for k, v in PRESETS[preset]["subprompts"].items() if k in names}
        self.subprompts = merge_subprompts(defaults, subprompts)
        self.order = PRESETS[preset]["order"]
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold
        self.rule = rule
        self.dedup_iou = dedup_iou
        self.ignore_conflicts = ignore_conflicts
        self.separator = separator

    def prompt(self, tags: Iterable[str], sample: Optional[str] = None) -> Prompt:
        return build_prompt(tags, self.class_names, self.subprompts, order=self.order,
                            separator=self.separator, sample=sample)

    def __call__(self, image: np.ndarray, tags: Iterable[str], sample: Optional[str] = None) -> GroundedResult:
        """Pseudo-label for one (H, W, 3) uint8 RGB image tagged with class names ``tags``."""
        return self.predict_batch([image], [tags], [sample])[0]

    def predict_batch(self, images: Sequence[np.ndarray], tags: Sequence[Iterable[str]],
                      samples: Optional[Sequence[Optional[str]]] = None) -> List[GroundedResult]:
        """``__call__`` for a batch: one detector pass, one SAM pass over the images with boxes."""
        samples = list(samples) if samples is not None else [None] * len(images)
        images = [np.asarray(im) for im in images]
        for im, s in zip(images, samples):
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise SeplError(f"image must be (H, W, 3) uint8 RGB, got {im.shape} {im.dtype}", sample=s)
        prompts = [self.prompt(t, s) for t, s in zip(tags, samples)]
        todo = [i for i, p in enumerate(prompts) if not p.empty]
        dets: Dict[int, Detections] = {}
        if todo:
            raws = self.detector.detect([images[i] for i in todo], [prompts[i] for i in todo])
            for i, raw in zip(todo, raws):
                dets[i] = select_detections(raw, prompts[i], self.box_threshold, self.text_threshold)
        with_boxes = [i for i in todo if len(dets[i])]
        sam_out = {}
        if with_boxes:
            outs = self.segmenter.predict_batch([images[i] for i in with_boxes], [dets[i].boxes for i in with_boxes])
            sam_out = dict(zip(with_boxes, outs))
        results = []
        for i, (im, prompt) in enumerate(zip(images, prompts)):
            h, w = im.shape[:2]
            warnings: List[str] = []
            if prompt.empty:
                d = Detections.empty(dict(queries=0, kept=0, empty_tags=1))
                warnings.append("no image-level labels: the label map is all background")
            else:
                d = dets[i]
                if d.counts.get("unmatched_phrase"):
                    warnings.append(f"{d.counts['unmatched_phrase']} boxes above threshold dropped: their best "
                                    "token is a separator, not a phrase of the caption")
                if d.counts.get("below_text_threshold"):
                    warnings.append(f"{d.counts['below_text_threshold']} boxes dropped: phrase score not above "
                                    f"text_threshold {self.text_threshold}")
                if not len(d):
                    d.counts["no_detection"] = 1
                    warnings.append(f"no box kept of {d.counts.get('queries', 0)} queries (box_threshold "
                                    f"{self.box_threshold}): the label map is all background")
            if i in sam_out:
                masks, mscores = sam_out[i]
                masks = np.asarray(masks, bool)
                label = paint_label_map(masks, d.class_ids, d.scores, shape=(h, w), rule=self.rule,
                                        dedup_iou=self.dedup_iou, ignore_conflicts=self.ignore_conflicts)
            else:
                masks, mscores = np.zeros((0, h, w), bool), np.zeros(0, np.float32)
                label = np.zeros((h, w), np.uint8)
            results.append(GroundedResult(label, d, masks, np.asarray(mscores, np.float32), prompt, warnings))
        return results


def sum_counts(counts: Iterable[Mapping[str, int]]) -> Dict[str, int]:
    """Add per-image count dicts key by key."""
    total: Dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + int(v)
    return total


@dataclass
class GroundedConfig:
    """Everything that defines a Grounded-SAM run; ``build()`` makes the pipeline.

    Detector: ``backend="groundingdino"`` uses ``config`` (``"SwinT_OGC"``, ``"SwinB"`` or a
    config path), ``checkpoint`` (.pth) and ``text_encoder`` (local bert-base-uncased folder);
    ``backend="transformers"`` uses ``hf_model`` (a saved Hugging Face Grounding DINO folder,
    or a hub name such as ``IDEA-Research/grounding-dino-tiny`` where a network exists).
    SAM: ``sam_model`` (``vit_h``/``vit_l``/``vit_b``/``tiny``) and ``sam_checkpoint``.
    ``random_weights=True`` allows building without checkpoints (tests, speed runs only).
    """

    backend: str = "groundingdino"
    config: str = "SwinT_OGC"
    checkpoint: Optional[str] = None
    text_encoder: Optional[str] = None
    hf_model: Optional[str] = None
    sam_model: str = "vit_h"
    sam_checkpoint: Optional[str] = None
    preset: str = "voc"
    subprompts: Dict[str, List[str]] = field(default_factory=dict)
    box_threshold: float = 0.3
    text_threshold: float = 0.25
    rule: str = DEFAULT_RULE
    dedup_iou: Optional[float] = 0.8
    ignore_conflicts: bool = False
    size: int = 800
    max_size: Optional[int] = 1333
    detector_overrides: Dict[str, object] = field(default_factory=dict)
    random_weights: bool = False

    def run_params(self) -> dict:
        """The JSON-serialisable parameters that make a run's output (recorded for resume)."""
        from dataclasses import asdict

        return asdict(self)

    def build_detector(self, device: str = "cpu"):
        from .detectors import GDINO_CHECKPOINTS, RELEASES, build_detector

        if self.backend in ("transformers", "hf"):
            if not self.hf_model:
                raise SeplError("the transformers backend needs a Hugging Face Grounding DINO folder",
                                hint="pass hf_model (--hf-model DIR or a hub name), e.g. "
                                     "IDEA-Research/grounding-dino-tiny or a folder it was saved to")
            return build_detector("transformers", model=self.hf_model, device=device)
        if self.checkpoint is None and not self.random_weights:
            name = GDINO_CHECKPOINTS.get(self.config, "the Grounding DINO .pth")
            raise SeplError("no Grounding DINO checkpoint given",
                            hint=f"download {name} from {RELEASES} and pass its path (--checkpoint PATH)")
        return build_detector("groundingdino", config=self.config, checkpoint=self.checkpoint,
                              text_encoder=self.text_encoder, device=device, size=self.size,
                              max_size=self.max_size, overrides=self.detector_overrides)

    def build_segmenter(self, device: str = "cpu"):
        from ..masks.build import build_sam
        from ..masks.sam_box import BoxPromptedSAM

        if self.sam_checkpoint is None and not self.random_weights:
            raise SeplError(f"no SAM checkpoint given for model type '{self.sam_model}'",
                            hint="download sam_vit_h_4b8939.pth (or the checkpoint of your model type) from "
                                 "https://github.com/facebookresearch/segment-anything#model-checkpoints "
                                 "and pass its path (--sam-checkpoint PATH)")
        sam = build_sam(self.sam_model, checkpoint=self.sam_checkpoint, device=device,
                        random_weights=self.random_weights)
        return BoxPromptedSAM(sam, multimask=False)

    def build(self, class_names: Sequence[str], device: str = "cpu") -> GroundedSAM:
        device = resolve_device(device)
        return GroundedSAM(self.build_detector(device), self.build_segmenter(device), class_names,
                           preset=self.preset, subprompts=self.subprompts, box_threshold=self.box_threshold,
                           text_threshold=self.text_threshold, rule=self.rule, dedup_iou=self.dedup_iou,
                           ignore_conflicts=self.ignore_conflicts)


def resolve_device(device: str) -> str:
    """The device name for the detector and SAM (``sepl.device.resolve_device``, as a string:
    Grounding DINO's own code takes device names)."""
    from ..device import resolve_device as _resolve

    return str(_resolve(device, "Grounded-SAM"))
