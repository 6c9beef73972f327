"""Tiny random-weight Grounding DINO set-ups, built offline (tests, CPU smoke runs, speed).

Nothing here is downloaded: the tokenizer vocabulary is written from the class names, the
BERT and detector configs are small. The weights are random, so the boxes mean nothing;
the code paths (tokenisation, phrase masks, both model implementations) are the real ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional

from ..classes import COCO_CLASSES, VOC_CLASSES
from .prompts import VOC_SUBPROMPTS

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", ","]

# groundingdino-py config entries that shrink the transformer (the Swin backbone stays as named)
GDINO_TINY_OVERRIDES = dict(enc_layers=1, dec_layers=1, num_queries=30, dim_feedforward=64,
                            use_checkpoint=False, use_transformer_ckpt=False)


def default_words() -> List[str]:
    words = list(VOC_CLASSES) + [w for ws in VOC_SUBPROMPTS.values() for w in ws]
    words += [w for name in COCO_CLASSES for w in name.split()]
    words += ["disc", "square", "triangle", "star", "ring"]  # sepl.synth
    return words


def write_vocab(folder, words: Optional[Iterable[str]] = None) -> Path:
    """A WordPiece ``vocab.txt`` with the special tokens and ``words`` (lower-cased)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = list(SPECIAL)
    for w in words if words is not None else default_words():
        w = str(w).strip().lower()
        if w and w not in vocab:
            vocab.append(w)
    path = folder / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    return path


def _tokenizer(vocab: Path):
    import inspect

    from transformers import BertTokenizerFast

    # transformers 5 takes the vocabulary as `vocab` and silently ignores `vocab_file`
    key = "vocab" if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters else "vocab_file"
    tok = BertTokenizerFast(**{key: str(vocab)}, do_lower_case=True)
    if tok.convert_tokens_to_ids(".") == tok.unk_token_id:
        raise RuntimeError(f"the tokenizer did not read {vocab}")
    return tok


def tiny_bert_config(vocab_size: int):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=256)


def write_tiny_text_encoder(folder, words: Optional[Iterable[str]] = None, seed: int = 0) -> Path:
    """A local BERT folder (config, random weights, fast tokenizer) for ``GroundingDinoPy``."""
    import torch
    from transformers import BertModel

    vocab = write_vocab(folder, words)
    tok = _tokenizer(vocab)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        BertModel(tiny_bert_config(len(tok))).save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)


def write_tiny_hf_grounding_dino(folder, words: Optional[Iterable[str]] = None, seed: int = 0,
                                 size: int = 128, max_size: int = 200, num_queries: int = 20) -> Path:
    """A Hugging Face Grounding DINO folder (model + processor) for ``HFGroundingDino``."""
    import torch
    from transformers import (GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)

    folder = Path(folder)
    vocab = write_vocab(folder / "_vocab", words)
    tok = _tokenizer(vocab)
    backbone = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], window_size=4,
                          out_features=["stage2", "stage3", "stage4"])
    # two decoder layers: transformers 5 cannot tie the box heads of a one-layer decoder
    cfg = GroundingDinoConfig(backbone_config=backbone, text_config=tiny_bert_config(len(tok)), d_model=32,
                              encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                              encoder_attention_heads=2, decoder_attention_heads=2, num_queries=num_queries)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        GroundingDinoForObjectDetection(cfg).eval().save_pretrained(folder)
    proc = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": size, "longest_edge": max_size}),
        tokenizer=tok)
    proc.save_pretrained(folder)
    return folder
