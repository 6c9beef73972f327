"""Hugging Face hub names for the transformers Grounding DINO: resolved where a network exists
(or from the local Hugging Face cache), a clear error offline."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import SeplError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(name: str) -> bool:
    """``"org/model"`` that is not an existing path (a missing folder may also look like one)."""
    return bool(_HUB_ID.match(str(name))) and not Path(name).expanduser().exists()


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def load_from_hub(name: str, model_cls, processor_cls, hint: str, **model_kwargs):
    """(processor, model) of hub model ``name``: from the local cache first, else downloaded
    (unless ``HF_HUB_OFFLINE``). Raises a SeplError saying which of the two failed and how to
    get a local folder instead."""
    errors = []
    for local_only in (True, False):
        if not local_only and hub_offline():
            break
        try:
            processor = processor_cls.from_pretrained(name, local_files_only=local_only)
            model = model_cls.from_pretrained(name, local_files_only=local_only, **model_kwargs)
            return processor, model
        except (OSError, ValueError) as e:
            errors.append(f"{'cache' if local_only else 'download'}: {type(e).__name__}: {str(e).splitlines()[0]}")
    where = ("HF_HUB_OFFLINE is set" if hub_offline() else "it could not be downloaded (no network?)")
    raise SeplError(
        f"'{name}' is no local folder and not in the local Hugging Face cache, and {where} "
        f"({'; '.join(errors)})",
        hint=f"pass a local folder instead: {hint}")
