"""Image-level tags from a CSV file (no FiftyOne)."""

from __future__ import annotations

import csv
import os
from typing import Dict, List

from ..errors import SeplError


def read_tags_csv(path: str) -> Dict[str, List[str]]:
    """``{file name or stem: [tag, ...]}`` from a CSV with a header.

    The image column is the first of ``filename``/``filepath``/``image``/``id``; tags are
    one ``tags``/``labels`` column separated by ``;``, ``|``, ``,`` or spaces, or several
    rows per image (one tag each).
    """
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise SeplError(f"tags CSV not found: {path}")
    if not rows:
        return {}
    cols = {c.lower().strip(): c for c in rows[0].keys() if c}
    key = next((cols[c] for c in ("filename", "filepath", "image", "id") if c in cols), None)
    tag = next((cols[c] for c in ("tags", "labels", "tag", "label", "classes") if c in cols), None)
    if key is None or tag is None:
        raise SeplError(f"{path} has columns {list(rows[0])}",
                        hint="use a header with 'filename' and 'tags' columns (tags separated by ';')")
    out: Dict[str, List[str]] = {}
    for row in rows:
        text = (row[tag] or "").strip()
        sep = next((s for s in (";", "|", ",") if s in text), None)
        tags = [t.strip() for t in (text.split(sep) if sep else text.split()) if t.strip()]
        out.setdefault(os.path.basename(row[key].strip()), []).extend(t for t in tags)
    return {k: list(dict.fromkeys(v)) for k, v in out.items()}
