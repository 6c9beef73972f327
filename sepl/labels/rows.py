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


def label_doc(label, disk_dir, sample_id: str) -> dict:
    """The ``fo.Segmentation`` document of an (H, W) uint8 label map: in the database, or a
    PNG ``<disk_dir>/<sample id>.png`` (written atomically) when ``disk_dir`` is set."""
    from . import raw

    if disk_dir is None:
        return raw.segmentation_doc(label)
    from ..labelio import write_label

    path = os.path.join(disk_dir, f"{sample_id}.png")
    write_label(path, label, palette=False)
    return raw.segmentation_doc(mask_path=path)
