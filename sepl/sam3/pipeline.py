"""SAM 3 pseudo-labels: image-level labels -> concept prompts -> instance masks -> label map.

Each image's tags become noun-phrase prompts with Grounded-SAM's presets (``voc``: the class
names in index order plus the reference's sub-prompts, e.g. ``horse -> saddle``, mapped back to
the parent class; ``coco``: alphabetical), one SAM 3 pass per (image, phrase) pair: the image
is encoded once, the phrases once, and the pairs are decoded in batches. The instances kept
(``postprocess.select_instances``) are painted with Grounded-SAM's rules
(``sepl.grounded.labelmap``: ``reference`` / ``score`` / ``area``, optional ignore band).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import SeplError
from ..grounded.labelmap import DEFAULT_RULE, RULES, paint_label_map
from ..grounded.pipeline import sum_counts
from ..grounded.prompts import PRESETS, Prompt, build_prompt, merge_subprompts
from ..masks.runtime import BatchSize, check_image, resolve_dtype, with_oom_retry
from ..optional import require
from .postprocess import Instances, select_instances


@dataclass
class Sam3Result:
    """What the pipeline made of one image.

    Attributes:
        label: (H, W) uint8 label map (0 background, 255 only with ``ignore_conflicts``).
        masks: (K, H, W) bool, every kept instance, grouped by phrase in prompt order.
        scores: (K,) float32 instance scores; presence: (K,) float32 presence of its phrase.
        boxes: (K, 4) float32 XYXY pixels (SAM 3's boxes).
        class_ids: (K,) int64 parent class of each instance; phrases: (K,) its prompt.
        prompt: the phrases used; warnings: why the image came out all background.
        counts: per-image counts (queries, kept, below thresholds, absent phrases, ...).
    """

    label: np.ndarray
    masks: np.ndarray
    scores: np.ndarray
    presence: np.ndarray
    boxes: np.ndarray
    class_ids: np.ndarray
    phrases: List[str]
    prompt: Prompt
    warnings: List[str] = field(default_factory=list)
    counts: Dict[str, int] = field(default_factory=dict)


class Sam3PseudoLabels:
    """The SAM 3 pseudo-label method.

    Args:
        model, processor: transformers' ``Sam3Model`` and ``Sam3Processor``
            (``sepl.masks.hf_models.load_hf_sam("sam3", ...)``).
        class_names: all class names, index 0 = background.
        preset, subprompts: as Grounded-SAM's (``sepl.grounded.prompts``).
        score_threshold: keep instances whose score (query x presence) is > this.
        presence_threshold: drop every instance of a phrase whose presence score is not > this.
        mask_threshold: on the resized sigmoid mask.
        rule, dedup_iou, ignore_conflicts: see ``sepl.grounded.labelmap.paint_label_map``.
        prompt_batch: (image, phrase) pairs decoded at once (halved on out-of-memory).
        dtype: "bfloat16"/"float16" autocast for the whole model (GPU).
    """

    def __init__(self, model, processor, class_names: Sequence[str], preset: str = "voc",
                 subprompts: Optional[Mapping[str, Iterable[str]]] = None, score_threshold: float = 0.5,
                 presence_threshold: float = 0.0, mask_threshold: float = 0.5, rule: str = DEFAULT_RULE,
                 dedup_iou: Optional[float] = 0.8, ignore_conflicts: bool = False, prompt_batch: int = 16,
                 image_batch: int = 4, dtype: Optional[str] = None):
        tf = require("transformers", "SAM 3")
        if not isinstance(model, tf.Sam3Model):
            raise SeplError(f"SAM 3 pseudo-labels need a Sam3Model, got {type(model).__name__}",
                            hint="load it with sepl.masks.hf_models.load_hf_sam('sam3', ...)")
        if preset not in PRESETS:
            raise SeplError(f"unknown prompt preset '{preset}'", hint=f"use one of {list(PRESETS)}")
        if rule not in RULES:
            raise SeplError(f"unknown painting rule '{rule}'", hint=f"use one of {RULES}")
        for name, v in (("score_threshold", score_threshold), ("presence_threshold", presence_threshold),
                        ("mask_threshold", mask_threshold)):
            if not 0 <= v <= 1:
                raise SeplError(f"{name} must lie in [0, 1], got {v}")
        self.model = model
        self.processor = processor
        self.class_names = list(class_names)
        names = {str(n).strip().lower() for n in self.class_names}
        defaults = {k: v for k, v in PRESETS[preset]["subprompts"].items() if k in names}
        self.subprompts = merge_subprompts(defaults, subprompts)
        self.order = PRESETS[preset]["order"]
        self.score_threshold = score_threshold
        self.presence_threshold = presence_threshold
        self.mask_threshold = mask_threshold
        self.rule = rule
        self.dedup_iou = dedup_iou
        self.ignore_conflicts = ignore_conflicts
        self.prompt_batch = BatchSize(prompt_batch)
        self.image_batch = BatchSize(image_batch)
        self.dtype = resolve_dtype(dtype)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def prompt(self, tags: Iterable[str], sample: Optional[str] = None) -> Prompt:
        return build_prompt(tags, self.class_names, self.subprompts, order=self.order, sample=sample)

    def __call__(self, image: np.ndarray, tags: Iterable[str], sample: Optional[str] = None) -> Sam3Result:
        """Pseudo-label for one (H, W, 3) uint8 RGB image tagged with class names ``tags``."""
        return self.predict_batch([image], [tags], [sample])[0]

    # -- model passes ------------------------------------------------------------------------

    def _autocast(self):
        torch = require("torch")
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def _vision(self, images: Sequence[np.ndarray]):
        torch = require("torch")
        enc = self.processor.image_processor(images=[np.ascontiguousarray(im) for im in images], return_tensors="pt")
        x = enc["pixel_values"].to(self.device)

        def run(idx):
            with torch.no_grad(), self._autocast():
                v = self.model.get_vision_features(pixel_values=x[list(idx)])
            return [(tuple(f[i] for f in v.fpn_hidden_states), tuple(p[i] for p in v.fpn_position_encoding))
                    for i in range(len(idx))]

        return with_oom_retry(run, list(range(len(images))), self.image_batch, what="image batch")

    def _text(self, phrases: Sequence[str]):
        torch = require("torch")
        tok = self.processor.tokenizer(list(phrases), padding="max_length", max_length=32, return_tensors="pt")
        ids, mask = tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)
        with torch.no_grad(), self._autocast():
            feats = self.model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        return feats, mask

    def _decode(self, vision, text, text_mask, pairs, sizes):
        """Kept ``Instances`` of each (image index, phrase index) pair; ``sizes[i]`` = (H, W) of image i.

        Post-processing runs inside each chunk, so only kept instances outlive it (SAM 3 has
        200 queries of 288 x 288 mask logits per pair)."""
        torch = require("torch")
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        def run(chunk):
            levels = len(vision[chunk[0][0]][0])
            fpn = tuple(torch.stack([vision[i][0][k] for i, _ in chunk]) for k in range(levels))
            pos = tuple(torch.stack([vision[i][1][k] for i, _ in chunk]) for k in range(levels))
            t = [j for _, j in chunk]
            vision_embeds = Sam3VisionEncoderOutput(fpn_hidden_states=fpn, fpn_position_encoding=pos)
            with torch.no_grad(), self._autocast():
                out = self.model(vision_embeds=vision_embeds,
                                 text_embeds=BaseModelOutputWithPooling(pooler_output=text[t]),
                                 attention_mask=text_mask[t])
            return [select_instances(out.pred_logits[k].float(), out.presence_logits[k].float(),
                                     out.pred_masks[k].float(), out.pred_boxes[k].float(), sizes[i],
                                     self.score_threshold, self.presence_threshold, self.mask_threshold)
                    for k, (i, _) in enumerate(chunk)]

        return with_oom_retry(run, list(pairs), self.prompt_batch, what="prompt batch")

    # -- the method --------------------------------------------------------------------------

    def predict_batch(self, images: Sequence[np.ndarray], tags: Sequence[Iterable[str]],
                      samples: Optional[Sequence[Optional[str]]] = None) -> List[Sam3Result]:
        """``__call__`` for a batch: one vision pass per image, one text pass per distinct phrase."""
        samples = list(samples) if samples is not None else [None] * len(images)
        if not (len(images) == len(tags) == len(samples)):
            raise ValueError(f"{len(images)} images, {len(tags)} tag lists, {len(samples)} names")
        checked = []
        for im, s in zip(images, samples):
            try:
                checked.append(check_image(im))
            except SeplError as e:
                raise SeplError(e.message, hint=e.hint, sample=s)
        prompts = [self.prompt(t, s) for t, s in zip(tags, samples)]
        phrases = sorted({p for pr in prompts for p in pr.phrases})
        todo = [i for i, p in enumerate(prompts) if not p.empty]
        raw: Dict[tuple, Instances] = {}
        index_of: Dict[str, int] = {}
        if todo:
            vision = dict(zip(todo, self._vision([checked[i] for i in todo])))
            text, mask = self._text(phrases)
            index = {p: j for j, p in enumerate(phrases)}
            pairs = [(i, index[p]) for i in todo for p in prompts[i].phrases]
            outs = self._decode(vision, text, mask, pairs, [im.shape[:2] for im in checked])
            raw = dict(zip(pairs, outs))
            index_of = index
        results = []
        for i, (im, prompt) in enumerate(zip(checked, prompts)):
            h, w = im.shape[:2]
            per = []
            counts: List[Dict[str, int]] = []
            for p, c in zip(prompt.phrases, prompt.classes):
                inst = raw[(i, index_of[p])]
                per.append((p, c, inst))
                counts.append(inst.counts)
            results.append(self._result(prompt, per, sum_counts(counts), (h, w)))
        return results

    def _result(self, prompt: Prompt, per, counts: Dict[str, int], hw) -> Sam3Result:
        h, w = hw
        warnings: List[str] = []
        if prompt.empty:
            counts = dict(empty_tags=1)
            warnings.append("no image-level labels: the label map is all background")
        masks = np.concatenate([inst.masks for _, _, inst in per]) if per else np.zeros((0, h, w), bool)
        scores = np.concatenate([inst.scores for _, _, inst in per]) if per else np.zeros(0, np.float32)
        boxes = np.concatenate([inst.boxes for _, _, inst in per]) if per else np.zeros((0, 4), np.float32)
        presence = np.concatenate([np.full(len(inst.scores), inst.presence, np.float32) for _, _, inst in per]) \
            if per else np.zeros(0, np.float32)
        class_ids = np.concatenate([np.full(len(inst.scores), c, np.int64) for _, c, inst in per]) \
            if per else np.zeros(0, np.int64)
        phrases = [p for p, _, inst in per for _ in range(len(inst.scores))]
        if not prompt.empty and not len(masks):
            counts["no_instance"] = 1
            warnings.append(f"no instance of {prompt.phrases} above score {self.score_threshold}"
                            + (f" / presence {self.presence_threshold}" if self.presence_threshold else "")
                            + ": the label map is all background")
        label = paint_label_map(masks, class_ids, scores, shape=(h, w), rule=self.rule, dedup_iou=self.dedup_iou,
                                ignore_conflicts=self.ignore_conflicts)
        return Sam3Result(label, masks, scores, presence, boxes, class_ids, phrases, prompt, warnings, counts)


@dataclass
class Sam3Config:
    """Everything that defines a SAM 3 pseudo-label run; ``build()`` makes the pipeline.

    ``model``: a save_pretrained folder of ``Sam3Model`` + ``Sam3Processor`` (e.g. a downloaded
    ``facebook/sam3``), a weights file with its config beside it, or a hub name where a network
    exists. ``random_weights=True`` builds the tiny random model instead (tests, speed only).
    """

    model: Optional[str] = None
    random_weights: bool = False
    preset: str = "voc"
    subprompts: Dict[str, List[str]] = field(default_factory=dict)
    score_threshold: float = 0.5
    presence_threshold: float = 0.0
    mask_threshold: float = 0.5
    rule: str = DEFAULT_RULE
    dedup_iou: Optional[float] = 0.8
    ignore_conflicts: bool = False
    dtype: Optional[str] = None

    def run_params(self) -> dict:
        """The JSON-serialisable parameters that make a run's output (recorded for resume)."""
        out = asdict(self)
        if self.model:  # a folder may move: what identifies the model is its name
            import os

            out["model"] = os.path.basename(os.path.normpath(str(self.model))) if os.path.exists(str(self.model)) \
                else str(self.model)
        return out

    def build(self, class_names: Sequence[str], device: str = "auto", prompt_batch: int = 16) -> Sam3PseudoLabels:
        from ..masks.hf_models import load_hf_sam

        model, proc, _ = load_hf_sam("sam3", self.model, device=device, random_weights=self.random_weights)
        return Sam3PseudoLabels(model, proc, class_names, preset=self.preset, subprompts=self.subprompts,
                                score_threshold=self.score_threshold, presence_threshold=self.presence_threshold,
                                mask_threshold=self.mask_threshold, rule=self.rule, dedup_iou=self.dedup_iou,
                                ignore_conflicts=self.ignore_conflicts, prompt_batch=prompt_batch, dtype=self.dtype)
