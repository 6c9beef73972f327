"""Text-prompted box detectors behind one interface (Grounding DINO, two implementations).

- ``GroundingDinoPy``: the original model through ``groundingdino-py`` (configs Swin-T OGC and
  Swin-B, checkpoints ``groundingdino_swint_ogc.pth`` / ``groundingdino_swinb_cogcoor.pth``),
  with its BERT text encoder and tokenizer read from a local folder.
- ``HFGroundingDino``: transformers' ``GroundingDinoForObjectDetection`` from a Hugging Face
  checkpoint folder (e.g. a saved ``IDEA-Research/grounding-dino-tiny``), or a hub name
  (``IDEA-Research/grounding-dino-tiny``) where a network exists or the model is in the local
  Hugging Face cache.

Both return, per image, every query's box and its sigmoid score for every caption token
(``RawDetections``); ``select_detections`` then applies the thresholds and maps each kept box
to a class through its phrase, counting every box it drops and why.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import SeplError
from .prompts import Prompt, token_phrase_index

GDINO_CONFIGS = {
    "SwinT_OGC": "GroundingDINO_SwinT_OGC.py",
    "SwinB": "GroundingDINO_SwinB_cfg.py",
}
GDINO_CHECKPOINTS = {
    "SwinT_OGC": "groundingdino_swint_ogc.pth",
    "SwinB": "groundingdino_swinb_cogcoor.pth",
}
RELEASES = "https://github.com/IDEA-Research/GroundingDINO/releases"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass
class RawDetections:
    """Everything a detector says about one image, before thresholds.

    Attributes:
        boxes: (Q, 4) float32 boxes ``x0, y0, x1, y1`` in pixels of the input image.
        token_scores: (Q, T) float32 sigmoid score of each query for each caption token.
        token_phrase: (T,) int64 phrase index of each token, -1 for specials/separators.
    """

    boxes: np.ndarray
    token_scores: np.ndarray
    token_phrase: np.ndarray


@dataclass
class Detections:
    """Boxes kept for one image, each mapped to a class.

    Attributes:
        boxes: (K, 4) float32 ``x0, y0, x1, y1`` pixels.
        scores: (K,) float32 box score (max token sigmoid).
        phrases: K matched phrases.
        class_ids: (K,) int64 class index (parent class for a sub-prompt).
        counts: how many queries were seen, kept and dropped, by reason.
    """

    boxes: np.ndarray
    scores: np.ndarray
    phrases: List[str]
    class_ids: np.ndarray
    counts: Dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def empty(counts: Optional[Dict[str, int]] = None) -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), [], np.zeros(0, np.int64),
                          dict(counts or {}))


def select_detections(raw: RawDetections, prompt: Prompt, box_threshold: float = 0.3,
                      text_threshold: float = 0.25) -> Detections:
    """Threshold the boxes and map each to a class, the reference way.

    A query is a box when its highest token score is above ``box_threshold``. Its phrase is
    the prompt phrase holding its highest-scoring token (the reference grows the phrase from
    that token up to the separators); the box is dropped and counted when that token is a
    separator or special token (``unmatched_phrase``), or when the phrase's best token score
    is not above ``text_threshold`` (``below_text_threshold``; never with the defaults, as the
    reference leaves ``text_threshold`` unused).

    Counts: ``queries``, ``below_box_threshold``, ``unmatched_phrase``,
    ``below_text_threshold``, ``kept``.
    """
    q = len(raw.boxes)
    counts = dict(queries=q, below_box_threshold=0, unmatched_phrase=0, below_text_threshold=0, kept=0)
    if q == 0 or raw.token_scores.shape[1] == 0:
        counts["below_box_threshold"] = q
        return Detections.empty(counts)
    best = raw.token_scores.max(axis=1)
    arg = raw.token_scores.argmax(axis=1)
    above = best > box_threshold
    counts["below_box_threshold"] = int((~above).sum())
    keep, phrases, classes = [], [], []
    for i in np.flatnonzero(above):
        p = int(raw.token_phrase[arg[i]])
        if p < 0:
            counts["unmatched_phrase"] += 1
            continue
        if raw.token_scores[i, raw.token_phrase == p].max() <= text_threshold:
            counts["below_text_threshold"] += 1
            continue
        keep.append(i)
        phrases.append(prompt.phrases[p])
        classes.append(prompt.classes[p])
    counts["kept"] = len(keep)
    keep = np.asarray(keep, np.int64)
    return Detections(raw.boxes[keep].astype(np.float32), best[keep].astype(np.float32), phrases,
                      np.asarray(classes, np.int64), counts)


def resize_shape(h: int, w: int, size: int = 800, max_size: Optional[int] = 1333) -> tuple:
    """(new_h, new_w) of groundingdino's ``T.RandomResize([size], max_size=max_size)``.

    Short side ``size``, long side at most ``max_size``; the long side is truncated with
    ``int()`` as groundingdino's ``get_size_with_aspect_ratio`` does (375x500 -> 800x1066, not
    the rounded 1067). Only a too-long side rounds, when ``size`` is recomputed from ``max_size``.
    """
    if max_size is not None:
        short, long = float(min(h, w)), float(max(h, w))
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


def preprocess_image(image: np.ndarray, size: int = 800, max_size: Optional[int] = 1333) -> np.ndarray:
    """groundingdino's inference transform of an HxWx3 uint8 RGB image, as (3, h, w) float32.

    ``RandomResize([size], max_size)`` (PIL bilinear, which is what torchvision's ``resize``
    runs on a PIL image), ``ToTensor`` (/ 255) and ``Normalize`` with ImageNet's mean and std.
    """
    from PIL import Image

    h, w = image.shape[:2]
    nh, nw = resize_shape(h, w, size, max_size)
    pil = Image.fromarray(np.ascontiguousarray(image))
    if (nh, nw) != (h, w):  # torchvision returns the image itself when the size is unchanged
        pil = pil.resize((nw, nh), Image.BILINEAR)
    im = np.asarray(pil, np.float32) / np.float32(255)
    im = (im - MEAN) / STD
    return np.ascontiguousarray(im.transpose(2, 0, 1))


def _cxcywh_to_xyxy(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    cx, cy, bw, bh = boxes.T
    out = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1) * np.array([w, h, w, h], np.float32)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out.astype(np.float32)


def _check_length(ids: Sequence[int], max_len: int, prompt: Prompt) -> int:
    if len(ids) > max_len:
        raise SeplError(f"the caption has {len(ids)} tokens, more than the detector's {max_len}: "
                        f"phrases past the limit could never be detected ('{prompt.caption[:60]}...')",
                        hint="use fewer sub-prompts, or split the class list")
    return len(ids)


def check_text_encoder_dir(path) -> Path:
    """The local folder holding BERT's config, weights and tokenizer; SeplError naming what is missing."""
    how = ("on a machine with network: python -c \"from transformers import AutoTokenizer, BertModel; "
           "AutoTokenizer.from_pretrained('bert-base-uncased').save_pretrained('DIR'); "
           "BertModel.from_pretrained('bert-base-uncased').save_pretrained('DIR')\", then copy DIR here "
           "and pass it as the text encoder folder")
    if path is None:
        raise SeplError("no text-encoder folder given (Grounding DINO needs bert-base-uncased locally)", hint=how)
    p = Path(path)
    if not p.is_dir():
        raise SeplError(f"text-encoder folder {p} does not exist", hint=how)
    if not (p / "config.json").is_file():
        raise SeplError(f"text-encoder folder {p} has no config.json", hint=how)
    if not ((p / "tokenizer.json").is_file() or (p / "vocab.txt").is_file()):
        raise SeplError(f"text-encoder folder {p} has no tokenizer (tokenizer.json or vocab.txt)", hint=how)
    return p


class BoxPrompter:
    """A detector: ``detect(images, prompts) -> [RawDetections]`` for a batch."""

    device: str = "cpu"

    def detect(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> List[RawDetections]:
        raise NotImplementedError

    def __call__(self, image: np.ndarray, prompt: Prompt) -> RawDetections:
        return self.detect([image], [prompt])[0]


@contextlib.contextmanager
def _bert_compat():
    """Let groundingdino-py 0.4.0 build its text encoder under transformers 5.

    groundingdino-py wraps BertModel in ``BertModelWarper``, which copies
    ``get_extended_attention_mask``, ``invert_attention_mask`` and ``get_head_mask`` from
    the model and calls ``BertEncoder`` with ``head_mask``/``output_attentions``/``return_dict``.
    transformers 5 removed those three methods (AttributeError while building) and that
    encoder signature. While building, the wrapper is swapped for ``BertText`` (``_make_bert_text``) (same
    submodules, hence the same checkpoint keys), which runs the layers with an additive
    4-D mask. Under transformers 4 nothing is changed.
    """
    from transformers import BertModel

    if hasattr(BertModel, "get_extended_attention_mask"):
        yield
        return
    import groundingdino.models.GroundingDINO.groundingdino as gd

    original = gd.BertModelWarper
    gd.BertModelWarper = _make_bert_text()
    try:
        yield
    finally:
        gd.BertModelWarper = original


def _make_bert_text():
    import torch
    from torch import nn

    class BertText(nn.Module):
        """BERT's embeddings + encoder layers with Grounding DINO's (B, T, T) phrase mask."""

        def __init__(self, bert_model):
            super().__init__()
            self.config = bert_model.config
            self.embeddings = bert_model.embeddings
            self.encoder = bert_model.encoder
            self.pooler = bert_model.pooler

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, **_):
            h = self.embeddings(input_ids=input_ids, position_ids=position_ids, token_type_ids=token_type_ids)
            if attention_mask is None:
                attention_mask = torch.ones(input_ids.shape, device=input_ids.device)
            m = attention_mask[:, None, None, :] if attention_mask.dim() == 2 else attention_mask[:, None]
            m = (1.0 - m.to(h.dtype)) * torch.finfo(h.dtype).min
            for layer in self.encoder.layer:
                h = layer(h, m)
                if isinstance(h, tuple):
                    h = h[0]
            return {"last_hidden_state": h}

    return BertText


def _import_groundingdino():
    try:
        from groundingdino.models import build_model  # noqa: F401
        from groundingdino.util.slconfig import SLConfig  # noqa: F401
    except Exception as e:  # ImportError, or a broken build (e.g. its C++ op)
        raise SeplError(f"groundingdino-py cannot be imported: {type(e).__name__}: {e}",
                        hint="pip install 'groundingdino-py==0.4.0' (or use the transformers backend: "
                             "--backend transformers with a Hugging Face checkpoint folder)")
    import groundingdino

    return groundingdino


class GroundingDinoPy(BoxPrompter):
    """Grounding DINO from ``groundingdino-py`` (the original code and checkpoints).

    Args:
        config: ``"SwinT_OGC"``, ``"SwinB"`` or the path of a groundingdino config ``.py``.
        checkpoint: the ``.pth`` file; None builds random weights (tests, speed runs).
        text_encoder: local folder with bert-base-uncased (config, weights, tokenizer).
        device: torch device.
        size, max_size: resize rule, short side ``size`` and long side at most ``max_size``
            (800 / 1333 as the reference); ``preprocess_image`` gives groundingdino's own
            ``RandomResize`` + ``ToTensor`` + ``Normalize`` input (sizes equal on all 1464 VOC
            train sizes, pixels within float rounding: ``tests/test_grounded_detectors.py``).
        overrides: config entries to replace (e.g. ``{"num_queries": 50}`` for tiny tests).
    """

    def __init__(self, config: str = "SwinT_OGC", checkpoint: Optional[str] = None, text_encoder=None,
                 device: str = "cpu", size: int = 800, max_size: Optional[int] = 1333,
                 overrides: Optional[dict] = None):
        import torch

        text_dir = check_text_encoder_dir(text_encoder)
        if checkpoint is not None and not os.path.isfile(checkpoint):
            name = GDINO_CHECKPOINTS.get(config, "the Grounding DINO .pth")
            raise SeplError(f"Grounding DINO checkpoint {checkpoint} not found",
                            hint=f"download {name} from {RELEASES} and put it at {checkpoint}, or pass its path")
        gdino = _import_groundingdino()
        from groundingdino.models import build_model
        from groundingdino.util.slconfig import SLConfig

        cfg_path = config
        if config in GDINO_CONFIGS:
            cfg_path = os.path.join(os.path.dirname(gdino.__file__), "config", GDINO_CONFIGS[config])
        if not os.path.isfile(cfg_path):
            raise SeplError(f"Grounding DINO config {cfg_path} not found",
                            hint=f"use one of {list(GDINO_CONFIGS)} or the path of a config .py")
        args = SLConfig.fromfile(cfg_path)
        args.device = device
        args.text_encoder_type = str(text_dir)
        for k, v in (overrides or {}).items():
            setattr(args, k, v)
        with _bert_compat(), contextlib.redirect_stdout(open(os.devnull, "w")):
            model = build_model(args)
        if checkpoint is not None:
            from ..safeload import torch_load

            state = torch_load(checkpoint, "Grounding DINO checkpoint")
            state = state.get("model", state)
            state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
            res = model.load_state_dict(state, strict=False)
            if res.missing_keys:
                raise SeplError(
                    f"checkpoint {checkpoint} lacks {len(res.missing_keys)} weights of config {config} "
                    f"(e.g. {res.missing_keys[:3]})", hint="pass the config that matches the checkpoint")
        self.model = model.eval().to(device)
        self.tokenizer = model.tokenizer
        self.device = device
        self.size, self.max_size = size, max_size

    def _tensor(self, image: np.ndarray):
        import torch

        return torch.from_numpy(preprocess_image(image, self.size, self.max_size)).to(self.device)

    def detect(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> List[RawDetections]:
        """Batches only images with the same caption and size, so each answer equals the
        single-image one: groundingdino-py's text self-attention repeats its (B, T, T) mask
        head-major (``src_mask.repeat(nhead, 1, 1)`` in ``transformer_vanilla.py``) where
        ``nn.MultiheadAttention`` wants batch-major, which mixes the captions of a batch; and
        zero padding of mixed sizes changes what the Swin windows see."""
        import torch

        images = [np.asarray(im) for im in images]
        groups: Dict[tuple, List[int]] = {}
        for i, (im, p) in enumerate(zip(images, prompts)):
            groups.setdefault((p.caption, im.shape[:2]), []).append(i)
        results: List[Optional[RawDetections]] = [None] * len(images)
        for (caption, _), members in groups.items():
            batch = torch.stack([self._tensor(images[i]) for i in members])
            with torch.inference_mode():
                out = self.model(batch, captions=[caption] * len(members))
            logits = out["pred_logits"].float().sigmoid().cpu().numpy()
            boxes = out["pred_boxes"].float().cpu().numpy()
            index, ids = token_phrase_index(prompts[members[0]], self.tokenizer)
            t = _check_length(ids, logits.shape[2], prompts[members[0]])
            for b, i in enumerate(members):
                results[i] = RawDetections(_cxcywh_to_xyxy(boxes[b], *images[i].shape[:2]),
                                           logits[b, :, :t].astype(np.float32), index[:t])
        return results


class HFGroundingDino(BoxPrompter):
    """transformers' Grounding DINO from a Hugging Face checkpoint folder.

    Images go through the folder's own transformers processor, which is close to
    groundingdino's preprocessing but not equal: its long side differs by 1 px where the
    1333 cap binds (29 of the 1464 VOC train sizes), and its default torchvision backend's
    antialiased resize differs from PIL's by up to one grey level
    (``test_transformers_processor_is_close_to_groundingdino_not_equal``).

    Args:
        model: folder holding ``config.json``, the weights, the tokenizer and
            ``preprocessor_config.json``/``processor_config.json`` (``save_pretrained`` of
            both the model and its processor), or a hub name ``org/name`` (from the local
            Hugging Face cache, else downloaded unless ``HF_HUB_OFFLINE``).
        device: torch device.
        dtype: e.g. ``torch.float16`` on a GPU.
    """

    def __init__(self, model, device: str = "cpu", dtype=None):
        p = Path(model)
        hint = ("save one where a network exists: GroundingDinoForObjectDetection.from_pretrained("
                "'IDEA-Research/grounding-dino-tiny').save_pretrained(DIR); AutoProcessor.from_pretrained("
                "'IDEA-Research/grounding-dino-tiny').save_pretrained(DIR)")
        from .hub import is_hub_id

        if is_hub_id(str(model)):  # "org/name": the hub (or its local cache) where a network exists
            self._init_model(*self._from_hub(str(model), hint, dtype), device, dtype)
            return
        if not p.is_dir():
            raise SeplError(f"Hugging Face Grounding DINO folder {p} does not exist", hint=hint)
        if not (p / "config.json").is_file():
            raise SeplError(f"{p} has no config.json (not a saved Grounding DINO model)", hint=hint)
        if not ((p / "tokenizer.json").is_file() or (p / "vocab.txt").is_file()):
            raise SeplError(f"{p} has no tokenizer (tokenizer.json or vocab.txt)",
                            hint="also save the processor into the folder: " + hint)
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        try:
            self.processor = AutoProcessor.from_pretrained(str(p), local_files_only=True)
            kw = {} if dtype is None else dict(dtype=dtype)
            self.model = GroundingDinoForObjectDetection.from_pretrained(str(p), local_files_only=True, **kw)
        except (OSError, ValueError) as e:
            raise SeplError(f"cannot load Grounding DINO from {p}: {e}", hint=hint)
        self._init_model(self.processor, self.model, device, dtype)

    @staticmethod
    def _from_hub(name: str, hint: str, dtype):
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        from .hub import load_from_hub

        kw = {} if dtype is None else dict(dtype=dtype)
        return load_from_hub(name, GroundingDinoForObjectDetection, AutoProcessor, hint, **kw)

    def _init_model(self, processor, model, device, dtype):
        import torch

        self.processor, self.model = processor, model
        self.model = self.model.eval().to(device)
        self.tokenizer = self.processor.tokenizer
        # the model hard-codes bert-base-uncased's ids of [CLS] [SEP] . ? : use this tokenizer's
        special = self.tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", ".", "?"])
        buf = self.model.model.special_tokens
        self.model.model.special_tokens = torch.tensor(special, dtype=buf.dtype, device=buf.device)
        self.device = device
        self.dtype = dtype

    def detect(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> List[RawDetections]:
        """Batches images of the same size (captions may differ: this implementation keeps
        them apart), so each answer equals the single-image one; zero padding of mixed
        sizes would change what the Swin windows see."""
        images = [np.asarray(im) for im in images]
        groups: Dict[tuple, List[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape[:2], []).append(i)
        results: List[Optional[RawDetections]] = [None] * len(images)
        for members in groups.values():
            for i, raw in zip(members, self._detect([images[i] for i in members], [prompts[i] for i in members])):
                results[i] = raw
        return results

    def _detect(self, images: List[np.ndarray], prompts: List[Prompt]) -> List[RawDetections]:
        import torch

        inputs = self.processor(images=images, text=[p.caption for p in prompts],
                                padding="longest", return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if self.dtype is not None:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.model(**inputs)
        logits = out.logits.float().sigmoid().cpu().numpy()
        boxes = out.pred_boxes.float().cpu().numpy()
        results = []
        for b, (im, prompt) in enumerate(zip(images, prompts)):
            index, ids = token_phrase_index(prompt, self.tokenizer)
            t = _check_length(ids, logits.shape[2], prompt)
            results.append(RawDetections(_cxcywh_to_xyxy(boxes[b], *im.shape[:2]),
                                         logits[b, :, :t].astype(np.float32), index[:t]))
        return results


BACKENDS = ("groundingdino", "transformers")


def build_detector(backend: str = "groundingdino", **kwargs) -> BoxPrompter:
    """A detector by backend name: ``"groundingdino"`` (``GroundingDinoPy`` kwargs) or
    ``"transformers"`` (``HFGroundingDino`` kwargs)."""
    if backend in ("groundingdino", "groundingdino-py", "gdino"):
        return GroundingDinoPy(**kwargs)
    if backend in ("transformers", "hf"):
        return HFGroundingDino(**kwargs)
    raise SeplError(f"unknown detector backend '{backend}'", hint=f"use one of {BACKENDS}")
