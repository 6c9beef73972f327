"""Loading transformers' SAM 2 / 2.1, SAM-HQ and SAM 3 models (and tiny random ones).

Where a model comes from, by what ``model`` names:
- a folder written by ``save_pretrained`` (config.json + weights, and the processor files
  when saved with it): e.g. a downloaded ``facebook/sam2.1-hiera-large`` snapshot;
- a weights file (``.safetensors`` / ``.bin`` / ``.pt``) in transformers' layout with its
  ``config.json`` beside it;
- a hub name (``facebook/sam2.1-hiera-large``), fetched where a network exists.
Offline, a missing model is a SeplError naming it and the download command. The original
repositories' checkpoint files (``sam2.1_hiera_large.pt``, ``sam_hq_vit_l.pth``, ``sam3.pt``)
use another key layout: they are recognised and refused with the conversion to use.

``random_weights=True`` builds a tiny model of the same classes with random weights (tests,
smoke runs, speed measurements); it is never chosen implicitly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..errors import SeplError
from ..optional import require

# family -> (transformers config.model_type values accepted, what the family is called)
FAMILIES: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "sam2": (("sam2",), "SAM 2 / 2.1"),
    "samhq": (("sam_hq",), "SAM-HQ"),
    "sam3": (("sam3", "sam3_video"), "SAM 3"),
}
HUB_NAMES: Dict[str, Tuple[str, ...]] = {
    "sam2": ("facebook/sam2.1-hiera-tiny", "facebook/sam2.1-hiera-small", "facebook/sam2.1-hiera-base-plus",
             "facebook/sam2.1-hiera-large"),
    "samhq": ("syscv-community/sam-hq-vit-base",),  # the name transformers' docs use; larger ones alike
    "sam3": ("facebook/sam3",),
}
# released input sizes (square): what the processors resize to
RELEASED_INPUT_SIZE = {"sam2": 1024, "samhq": 1024, "sam3": 1008}
TINY_IMAGE_SIZE = {"sam2": 128, "samhq": 128, "sam3": 112}
log = logging.getLogger(__name__)
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


def _family(family: str) -> Tuple[Tuple[str, ...], str]:
    if family not in FAMILIES:
        raise SeplError(f"unknown model family '{family}'", hint=f"use one of {', '.join(FAMILIES)}")
    return FAMILIES[family]


def _download_hint(family: str) -> str:
    names = HUB_NAMES[family]
    return (f"where a network exists run `hf download {names[-1]} --local-dir DIR` (or another of "
            f"{', '.join(names)}) and pass DIR")


def _original_layout(keys) -> Optional[str]:
    """Which original repository a state dict's keys come from, if any."""
    keys = list(keys)
    if any(k.startswith("image_encoder.trunk.") for k in keys):
        return "facebookresearch/sam2"
    if any(k.startswith("mask_decoder.hf_token") or k.startswith("mask_decoder.compress_vit_feat") for k in keys):
        return "SysCV/sam-hq"
    if any(k.startswith("detector.backbone.") or k.startswith("backbone.vision_backbone.") for k in keys):
        return "facebookresearch/sam3"
    if any(k.startswith("image_encoder.blocks.") for k in keys):
        return "segment-anything (SAM 1)"
    return None


def _read_keys(path: Path) -> Dict[str, Any]:
    torch = require("torch", "SAM 2 / SAM 3")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        with open(path, "rb") as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SeplError(f"cannot read weights file '{path}': {type(e).__name__}: {str(e)[:200]}",
                        hint="the file is corrupt or not a weights file; download it again")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state:
        raise SeplError(f"'{path}' holds no state dict", hint="point at a weights file or a save_pretrained folder")
    return state


def _check_type(config, family: str, where: str) -> None:
    accepted, what = _family(family)
    found = getattr(config, "model_type", None)
    if found not in accepted:
        other = {v: k for k, (types, _) in FAMILIES.items() for v in types}.get(found)
        hint = (f"use the {other} loader for it" if other else
                "use source sam_auto for SAM 1 checkpoints" if found == "sam" else
                f"point at a {what} model ({', '.join(HUB_NAMES[family][:2])}, ...)")
        raise SeplError(f"'{where}' is a '{found}' model, but {what} was asked for", hint=hint)


def _model_class(family: str):
    tf = require("transformers", "SAM 2 / SAM-HQ / SAM 3")
    return {"sam2": tf.Sam2Model, "samhq": tf.SamHQModel, "sam3": tf.Sam3Model}[family]


def _default_processor(family: str, image_size: int, folder: Optional[Path] = None):
    tf = require("transformers", "SAM 2 / SAM-HQ / SAM 3")
    if folder is not None and any((folder / f).is_file() for f in ("processor_config.json",
                                                                      "preprocessor_config.json")):
        cls = {"sam2": tf.Sam2Processor, "samhq": tf.SamHQProcessor, "sam3": tf.Sam3Processor}[family]
        try:
            return cls.from_pretrained(str(folder))
        except Exception as e:
            if family == "sam3":
                raise SeplError(f"cannot load the SAM 3 processor (tokenizer) in '{folder}': {str(e)[:200]}",
                                hint="save the model with its processor: processor.save_pretrained(DIR)")
            log.warning("cannot load the processor saved in %s (%s): using the default one for %d px",
                        folder, str(e)[:120], image_size)
    if family == "sam3":
        raise SeplError(f"'{folder}' has no SAM 3 processor (processor_config.json + tokenizer)",
                        hint="SAM 3 needs its CLIP tokenizer: save Sam3Processor next to the model")
    if family == "sam2":
        return tf.Sam2Processor(tf.Sam2ImageProcessor(size={"height": image_size, "width": image_size}))
    ip = tf.SamImageProcessor(size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size})
    return tf.SamHQProcessor(ip)


def _image_size(config) -> int:
    if hasattr(config, "vision_config"):
        size = getattr(config.vision_config, "image_size", None)
        if size is None and hasattr(config.vision_config, "backbone_config"):
            size = config.vision_config.backbone_config.image_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)
    return 1024


def load_hf_sam(family: str, model: Optional[str] = None, device: str = "cpu", random_weights: bool = False,
                seed: int = 0):
    """``(model, processor, name)`` for ``family`` ("sam2", "samhq" or "sam3"), in eval mode.

    ``model``: a save_pretrained folder, a weights file with config.json beside it, or a hub
    name. ``random_weights=True`` (and no ``model``) builds the tiny random model instead.
    Raises SeplError when nothing is given, the files are missing or of another model type.
    """
    from .runtime import resolve_device

    _, what = _family(family)
    dev = resolve_device(device)
    if random_weights:
        if model:
            raise SeplError(f"both a {what} model ('{model}') and random weights were asked for",
                            hint="drop --random-weights to use the model, or the model to test with random weights")
        m, proc = build_tiny(family, seed=seed)
        return m.to(dev), proc, f"{family}-tiny-random"
    if not model:
        raise SeplError(f"no {what} model given", hint=_download_hint(family))
    cls = _model_class(family)
    tf = require("transformers")
    path = Path(os.path.expanduser(str(model)))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SeplError(f"'{path}' has no config.json: not a save_pretrained folder", hint=_download_hint(family))
        config = tf.AutoConfig.from_pretrained(str(path))
        _check_type(config, family, str(path))
        if not any((path / f).is_file() for f in _WEIGHT_FILES):
            raise SeplError(f"'{path}' has a config but no weights ({' or '.join(_WEIGHT_FILES[:2])})",
                            hint=_download_hint(family))
        m = cls.from_pretrained(str(path))
        proc = _default_processor(family, _image_size(config), path)
        name = path.name
    elif path.is_file():
        state = _read_keys(path)
        origin = _original_layout(state)
        if origin is not None:
            raise SeplError(
                f"'{path}' is a checkpoint of {origin}, in its own key layout, which transformers' {cls.__name__} "
                f"does not read", hint=f"convert it with transformers' conversion script for that model, or "
                                       f"{_download_hint(family)}")
        if not (path.parent / "config.json").is_file():
            raise SeplError(f"weights file '{path}' has no config.json beside it",
                            hint="put the model's config.json in the same folder (save_pretrained writes both)")
        config = tf.AutoConfig.from_pretrained(str(path.parent))
        _check_type(config, family, str(path))
        m = cls(config)
        missing, unexpected = m.load_state_dict(state, strict=False)
        if missing:
            raise SeplError(f"'{path}' lacks {len(missing)} weights of {cls.__name__} (e.g. {missing[0]})",
                            hint="the file is not a complete checkpoint of this model; download it again")
        proc = _default_processor(family, _image_size(config), path.parent)
        name = path.stem
    elif "/" in str(model) and not str(model).startswith((".", "/", "~")):
        try:
            config = tf.AutoConfig.from_pretrained(str(model))
            _check_type(config, family, str(model))
            m = cls.from_pretrained(str(model))
            proc = {"sam2": tf.Sam2Processor, "samhq": tf.SamHQProcessor, "sam3": tf.Sam3Processor}[family] \
                .from_pretrained(str(model))
        except SeplError:
            raise
        except Exception as e:  # offline, unknown name, gated repository
            raise SeplError(f"cannot load {what} model '{model}' from the Hugging Face hub: "
                            f"{type(e).__name__}: {' '.join(str(e).split())[:160]}", hint=_download_hint(family))
        name = str(model)
    else:
        raise SeplError(f"{what} model '{model}' does not exist", hint=_download_hint(family))
    if family == "sam3":
        _check_tokenizer(proc, m.config, str(model))
    return m.eval().to(dev), proc, name


def _check_tokenizer(proc, config, where: str) -> None:
    """A SAM 3 processor whose tokenizer lost its vocabulary loads without complaint: refuse it."""
    tok = getattr(proc, "tokenizer", None)
    vocab = getattr(getattr(config, "text_config", None), "vocab_size", None)
    n = len(tok) if tok is not None else 0
    if n < 258 or (vocab is not None and n > vocab):  # CLIP's BPE has at least the 256 bytes + 2 specials
        raise SeplError(f"the SAM 3 processor in '{where}' has a tokenizer of {n} tokens "
                        f"(the text encoder has {vocab})",
                        hint="save the model's own Sam3Processor (tokenizer.json included) next to it")


# -- tiny random models ----------------------------------------------------------------------

def tiny_sam2_config(image_size: int = TINY_IMAGE_SIZE["sam2"]):
    """A Sam2Config with the released structure (Hiera + FPN + two-way decoder), ~0.35 M parameters."""
    tf = require("transformers")
    s = image_size
    backbone = tf.Sam2HieraDetConfig(
        hidden_size=16, num_attention_heads=1, image_size=[s, s], blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 1, 2, 2],
        window_size_per_stage=[8, 4, 4, 2], global_attention_blocks=[3],
        window_positional_embedding_background_size=[2, 2])
    vision = tf.Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16],
                                 backbone_feature_sizes=[[s // 4] * 2, [s // 8] * 2, [s // 16] * 2], fpn_hidden_size=32)
    prompt = tf.Sam2PromptEncoderConfig(hidden_size=32, image_size=s, patch_size=16, mask_input_channels=4)
    decoder = tf.Sam2MaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32)
    return tf.Sam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def tiny_samhq_config(image_size: int = TINY_IMAGE_SIZE["samhq"]):
    """A SamHQConfig (ViT with one global block, HQ decoder), ~0.1 M parameters."""
    tf = require("transformers")
    vision = tf.SamHQVisionConfig(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=image_size, patch_size=16, window_size=4, global_attn_indexes=[1],
                                  num_pos_feats=16, mlp_dim=64)
    prompt = tf.SamHQPromptEncoderConfig(hidden_size=32, image_size=image_size, patch_size=16, mask_input_channels=4)
    decoder = tf.SamHQMaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32,
                                        vit_dim=32)
    return tf.SamHQConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def tiny_clip_tokenizer(words=None):
    """A CLIP byte-level BPE tokenizer built offline: every byte is a token, and each of
    ``words`` (default: VOC and COCO class names and the sub-prompts) is merged into one."""
    tf = require("transformers")
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from ..grounded.tiny import default_words

    chars = list(bytes_to_unicode().values())
    vocab = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    seen = set(vocab)
    merges = []
    for w in words if words is not None else default_words():
        for part in str(w).strip().lower().split():
            if not part.isascii():
                continue
            toks = list(part[:-1]) + [part[-1] + "</w>"]
            cur = toks[0]
            for t in toks[1:]:
                if (cur, t) not in merges:
                    merges.append((cur, t))
                cur += t
                if cur not in seen:
                    seen.add(cur)
                    vocab.append(cur)
    return tf.CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)


def tiny_sam3_config(vocab_size: int, image_size: int = TINY_IMAGE_SIZE["sam3"], num_queries: int = 12):
    """A Sam3Config (ViT + FPN, CLIP text encoder, DETR encoder/decoder, mask decoder), ~0.25 M parameters."""
    tf = require("transformers")
    g = image_size // 14
    vit = tf.Sam3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=14, window_size=4, global_attn_indexes=[1],
                           pretrain_image_size=56)
    vision = tf.Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=32,
                                 backbone_feature_sizes=[[4 * g] * 2, [2 * g] * 2, [g] * 2])
    text = tf.CLIPTextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, projection_dim=32,
                             num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
                             bos_token_id=0, eos_token_id=1, pad_token_id=1)
    small = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64)
    return tf.Sam3Config(vision_config=vision, text_config=text,
                         geometry_encoder_config=dict(small, num_layers=1),
                         detr_encoder_config=dict(small, num_layers=1),
                         detr_decoder_config=dict(small, num_layers=1, num_queries=num_queries),
                         mask_decoder_config=dict(hidden_size=32, num_attention_heads=2))


def build_tiny(family: str, seed: int = 0):
    """``(model, processor)``: a tiny random model of ``family`` and its processor (same seed, same weights)."""
    torch = require("torch")
    tf = require("transformers")
    _family(family)
    tok = tiny_clip_tokenizer() if family == "sam3" else None
    config = {"sam2": lambda: tiny_sam2_config(), "samhq": lambda: tiny_samhq_config(),
              "sam3": lambda: tiny_sam3_config(len(tok))}[family]()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = _model_class(family)(config).eval()
    size = TINY_IMAGE_SIZE[family]
    if family == "sam3":
        proc = tf.Sam3Processor(tf.Sam3ImageProcessor(size={"height": size, "width": size}), tok)
    else:
        proc = _default_processor(family, size)
    return m, proc


def write_tiny(family: str, folder, seed: int = 0) -> Path:
    """Save a tiny random ``family`` model and its processor to ``folder`` (save_pretrained layout)."""
    m, proc = build_tiny(family, seed=seed)
    folder = Path(folder)
    m.save_pretrained(str(folder))
    proc.save_pretrained(str(folder))
    return folder
