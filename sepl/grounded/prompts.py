"""Text prompts from image-level labels, and the way back from a detected phrase to a class.

Grounding DINO is prompted with one caption per image: the names of the classes the image
is tagged with, lower-cased and joined with ``"."`` (``"cat.dog."``), in class-index order
as the reference (wsss_sam) does. A sub-prompt tree adds synonyms and parts that map back to
a parent class (``horse -> saddle``): a box whose phrase is ``saddle`` paints ``horse``.

Everything here is pure Python on strings and class indices; tokenisation is the
detector's business (see ``token_phrase_index``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import SeplError

# SPEC section 2: the sub-prompts the reference adds for PASCAL VOC.
VOC_SUBPROMPTS: Dict[str, List[str]] = {
    "horse": ["halter", "saddle"],
    "diningtable": ["bowl", "plate", "food", "fruit", "glass", "dishes"],
    "tvmonitor": ["tv", "monitor"],
}

# Presets: prompt order and default sub-prompts per label set.
PRESETS = {
    "voc": dict(order="index", subprompts=VOC_SUBPROMPTS),
    "coco": dict(order="alphabetical", subprompts={}),  # the reference builds COCO prompts from a set
    "none": dict(order="index", subprompts={}),
}


@dataclass
class Prompt:
    """One image's caption and what each of its phrases means.

    Attributes:
        caption: the text given to the detector, e.g. ``"horse.halter.saddle.person."``.
        phrases: the phrases of the caption in order (``["horse", "halter", ...]``).
        classes: (P,) class index of each phrase (the parent class for a sub-prompt).
        spans: (P,) ``(start, end)`` character span of each phrase in ``caption``.
    """

    caption: str
    phrases: List[str] = field(default_factory=list)
    classes: List[int] = field(default_factory=list)
    spans: List[Tuple[int, int]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.phrases

    def class_of(self, phrase: str) -> int:
        """Class index of a phrase (case and surrounding space ignored); -1 when unknown."""
        p = phrase.strip().lower()
        for name, c in zip(self.phrases, self.classes):
            if name == p:
                return c
        return -1


def normalise_subprompts(tree: Optional[Mapping[str, Iterable[str]]]) -> Dict[str, List[str]]:
    """Lower-case, strip and de-duplicate a ``{parent class: [sub-prompts]}`` tree."""
    out: Dict[str, List[str]] = {}
    for parent, children in (tree or {}).items():
        if isinstance(children, str):
            children = [children]
        seen: List[str] = []
        for child in children:
            c = str(child).strip().lower()
            if c and c not in seen:
                seen.append(c)
        out[str(parent).strip().lower()] = seen
    return out


def parse_subprompts(spec: Optional[str]) -> Dict[str, List[str]]:
    """Sub-prompt tree from a JSON file, a JSON string, or ``"horse:saddle,halter;sofa:couch"``."""
    if not spec:
        return {}
    text = spec
    if os.path.isfile(spec):
        with open(spec) as f:
            text = f.read()
    text = text.strip()
    if text.startswith("{"):
        try:
            tree = json.loads(text)
        except json.JSONDecodeError as e:
            raise SeplError(f"cannot parse the sub-prompt tree as JSON: {e}",
                            hint='write it as {"horse": ["saddle", "halter"]}')
        if not isinstance(tree, dict):
            raise SeplError("the sub-prompt tree must map a class name to a list of phrases")
        return normalise_subprompts(tree)
    tree: Dict[str, List[str]] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        if ":" not in part:
            raise SeplError(f"sub-prompt entry '{part}' has no ':'", hint='write "parent:child1,child2;parent2:child"')
        parent, children = part.split(":", 1)
        tree[parent] = [c for c in children.split(",")]
    return normalise_subprompts(tree)


def merge_subprompts(*trees: Optional[Mapping[str, Iterable[str]]]) -> Dict[str, List[str]]:
    """Union of sub-prompt trees, in argument order (a user's tree extends the defaults)."""
    out: Dict[str, List[str]] = {}
    for tree in trees:
        for parent, children in normalise_subprompts(tree).items():
            merged = out.setdefault(parent, [])
            merged.extend(c for c in children if c not in merged)
    return out


def build_prompt(
    tags: Iterable[str],
    class_names: Sequence[str],
    subprompts: Optional[Mapping[str, Iterable[str]]] = None,
    order: str = "index",
    separator: str = ".",
    sample: Optional[str] = None,
) -> Prompt:
    """The caption for an image tagged with ``tags``.

    Args:
        tags: the image's class names (any case; ``"background"`` and repeats are ignored).
        class_names: all class names, index 0 = background.
        subprompts: ``{class name: [phrases]}`` added after their class, mapping back to it.
        order: ``"index"`` (class-index order, the VOC reference) or ``"alphabetical"``.
        separator: what joins the phrases; the caption always ends with ``"."``. ``"."``
            reproduces the reference; ``" . "`` (Grounding DINO's demos) tokenises the same.
        sample: named in errors.

    Raises SeplError for a tag that is not a class name. A phrase already claimed by an
    earlier class (e.g. a sub-prompt equal to another tag) is kept once, for the first.
    """
    lookup = {str(n).strip().lower(): i for i, n in enumerate(class_names)}
    tree = normalise_subprompts(subprompts)
    unknown = [t for t in tree if t not in lookup]
    if unknown:
        raise SeplError(f"sub-prompt parents {unknown} are not class names",
                        hint=f"use names among {list(class_names)[1:6]}...")
    ids = set()
    for t in tags:
        name = str(t).strip().lower()
        if name not in lookup:
            raise SeplError(f"image label '{t}' is not one of the {len(class_names)} class names",
                            hint="fix the tag, or pass the class list the tags come from", sample=sample)
        if lookup[name] != 0:
            ids.add(lookup[name])
    if order == "index":
        parents = sorted(ids)
    elif order == "alphabetical":
        parents = sorted(ids, key=lambda i: str(class_names[i]).lower())
    else:
        raise SeplError(f"unknown prompt order '{order}'", hint="use 'index' or 'alphabetical'")
    phrases: List[str] = []
    classes: List[int] = []
    for c in parents:
        name = str(class_names[c]).strip().lower()
        for p in [name] + tree.get(name, []):
            if p not in phrases:
                phrases.append(p)
                classes.append(c)
    caption, spans = "", []
    for k, p in enumerate(phrases):
        if k:
            caption += separator
        spans.append((len(caption), len(caption) + len(p)))
        caption += p
    if phrases and not caption.endswith("."):
        caption += "."
    return Prompt(caption=caption, phrases=phrases, classes=classes, spans=spans)


def token_phrase_index(prompt: Prompt, tokenizer) -> Tuple[np.ndarray, List[int]]:
    """Which phrase each token of ``prompt.caption`` belongs to.

    Args:
        tokenizer: a Hugging Face tokenizer (the detector's).

    Returns:
        index: (T,) int64, the phrase index of each token, -1 for special tokens and
            separators (``[CLS]``, ``.``, ``[SEP]``).
        input_ids: the T token ids, as the detector sees them.
    """
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(prompt.caption, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        index = np.full(len(ids), -1, np.int64)
        for t, (s, e) in enumerate(enc["offset_mapping"]):
            if e <= s:
                continue
            for k, (ps, pe) in enumerate(prompt.spans):
                if ps <= s < pe:
                    index[t] = k
                    break
        return index, ids
    # slow tokenizers have no offsets: tokenise phrase by phrase and check the concatenation
    ids = list(tokenizer(prompt.caption)["input_ids"])
    pieces: List[int] = []
    owner: List[int] = []
    rest = prompt.caption
    for k, (s, e) in enumerate(prompt.spans):
        sep_ids = tokenizer(prompt.caption[(prompt.spans[k - 1][1] if k else 0):s], add_special_tokens=False)["input_ids"]
        pieces += sep_ids
        owner += [-1] * len(sep_ids)
        p_ids = tokenizer(prompt.caption[s:e], add_special_tokens=False)["input_ids"]
        pieces += p_ids
        owner += [k] * len(p_ids)
    tail = tokenizer(prompt.caption[prompt.spans[-1][1]:] if prompt.spans else rest, add_special_tokens=False)["input_ids"]
    pieces += tail
    owner += [-1] * len(tail)
    n_special = len(ids) - len(pieces)
    if n_special < 0 or ids[1:1 + len(pieces)] != pieces:
        raise SeplError("cannot align the caption's tokens with its phrases",
                        hint="use a fast (tokenizers) tokenizer: save one with tokenizer.json in the text-encoder folder")
    index = np.array([-1] + owner + [-1] * (n_special - 1), np.int64)
    return index, ids
