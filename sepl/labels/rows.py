"""Rows: what the bulk path reads per sample, as plain picklable values.

A row is ``{"id": str, "filepath": str, "shape": (H, W) or None, "fields": {name: raw
document or value}}``; ``shape`` comes from the sample's metadata.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Tuple

from ..errors import SeplError


def row_name(row: Dict[str, Any]) -> str:
    """How errors refer to a sample: its file name and id (as ``sepl.fo.convert.sample_name``)."""
    return f"{os.path.basename(row.get('filepath') or '')} ({row['id']})"


def row_shape(row: Dict[str, Any]) -> Tuple[int, int]:
    """(H, W) of the row's image: its metadata, else the image file's header."""
    if row.get("shape"):
        return tuple(row["shape"])
    from PIL import Image

    try:
        with Image.open(row["filepath"]) as im:
            w, h = im.size
    except (OSError, ValueError) as e:
        raise SeplError(f"cannot read image: {e}", hint="fix or remove the file")
    return h, w
