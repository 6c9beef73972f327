"""A registry of SAM builders: vit_h / vit_l / vit_b (the released models) and ``tiny``.

The models are built from segment-anything's own classes; a checkpoint is a state dict
loaded with ``load_state_dict`` exactly as ``segment_anything.build_sam`` does, so a tiny
random model saved with ``torch.save(sam.state_dict(), path)`` exercises the same path as a
released checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Dict, Optional, Tuple

from ..errors import SeplError
from ..optional import require


@dataclass(frozen=True)
class SamConfig:
    """Architecture of one SAM variant (defaults are the released models')."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: Tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256


SAM_CONFIGS: Dict[str, SamConfig] = {
    "vit_h": SamConfig(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamConfig(768, 12, 12, (2, 5, 8, 11)),
    # A few thousand parameters with the same structure, for tests and benchmarks on CPU.
    "tiny": SamConfig(32, 2, 2, (1,), image_size=128, window_size=4, prompt_embed_dim=32,
                      mask_in_chans=4, decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32),
}
MODEL_TYPES = tuple(SAM_CONFIGS)


def sam_from_config(cfg: SamConfig):
    """An untrained ``segment_anything.modeling.Sam`` (eval mode, CPU) for ``cfg``."""
    torch = require("torch", "SAM masks")
    sa = require("segment_anything", "SAM masks")
    m = sa.modeling
    embed = cfg.image_size // cfg.patch_size
    sam = m.Sam(
        image_encoder=m.ImageEncoderViT(
            depth=cfg.encoder_depth,
            embed_dim=cfg.encoder_embed_dim,
            img_size=cfg.image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=cfg.encoder_num_heads,
            patch_size=cfg.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=list(cfg.encoder_global_attn_indexes),
            window_size=cfg.window_size,
            out_chans=cfg.prompt_embed_dim,
        ),
        prompt_encoder=m.PromptEncoder(
            embed_dim=cfg.prompt_embed_dim,
            image_embedding_size=(embed, embed),
            input_image_size=(cfg.image_size, cfg.image_size),
            mask_in_chans=cfg.mask_in_chans,
        ),
        mask_decoder=m.MaskDecoder(
            num_multimask_outputs=3,
            transformer=m.TwoWayTransformer(
                depth=2,
                embedding_dim=cfg.prompt_embed_dim,
                mlp_dim=cfg.decoder_mlp_dim,
                num_heads=cfg.decoder_num_heads,
            ),
            transformer_dim=cfg.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


NO_CHECKPOINT_HINT = ("pass --checkpoint PATH (or set $SEPL_SAM_CHECKPOINT); without SAM weights use "
                      "--source superpixels (classical masks, NOT SAM); --random-weights builds random SAM "
                      "weights, whose masks mean nothing (tests and speed runs only)")


def build_sam(model_type: str, checkpoint: Optional[str] = None, device: str = "cpu", seed: int = 0,
              random_weights: bool = False):
    """A SAM model of ``model_type`` with the weights of ``checkpoint`` (a state dict file).

    Without a checkpoint, ``random_weights=True`` must say that random weights are wanted
    (drawn from ``seed``, so two tiny models built alike are identical): a SAM with random
    weights returns meaningless masks, so it is never a silent fallback. The model's
    ``sepl_random_weights`` attribute says which it is (run records store it).
    ``device`` may be "auto" (CUDA when available). Raises SeplError for an unknown type,
    no checkpoint without ``random_weights``, an unreadable checkpoint, or the checkpoint
    of another model type.
    """
    if model_type not in SAM_CONFIGS:
        raise SeplError(f"unknown SAM model type '{model_type}'", hint=f"use one of {', '.join(MODEL_TYPES)}")
    if checkpoint is None and not random_weights:
        raise SeplError(f"no checkpoint for SAM '{model_type}': refusing to run SAM with random weights",
                        hint=NO_CHECKPOINT_HINT)
    torch = require("torch", "SAM masks")
    from .checkpoints import load_state_dict
    from .runtime import resolve_device

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = sam_from_config(SAM_CONFIGS[model_type])
    if checkpoint is not None:
        load_state_dict(sam, checkpoint, model_type)
    sam.sepl_random_weights = checkpoint is None
    return sam.to(resolve_device(device))


def is_random(model) -> bool:
    """True for a SAM built with random weights (``build_sam(random_weights=True)``), or a
    mask source (``.sam``) holding one."""
    sam = getattr(model, "sam", model)
    return bool(getattr(sam, "sepl_random_weights", False))
