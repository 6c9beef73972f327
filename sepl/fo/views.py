"""Views that point a user at the samples worth looking at."""

from __future__ import annotations

from typing import List, Optional

from ..errors import SeplError


def score_field(view, key: str, by: str = "miou") -> str:
    """The per-sample field an evaluation ``key`` wrote: ``<key>_miou`` or ``<key>_delta``."""
    if by not in ("miou", "delta"):
        raise SeplError(f"cannot sort by '{by}'", hint="use 'miou' or 'delta'")
    field = f"{key}_{by}"
    if not view._dataset.has_field(field):
        have = sorted(f for f in view._dataset.get_field_schema() if f.endswith(("_miou", "_delta")))
        raise SeplError(f"dataset has no field '{field}'",
                        hint=f"evaluate first (sepl evaluate); per-sample score fields here: {have}")
    return field


def worst_samples(view, key: str, by: str = "miou", limit: Optional[int] = None):
    """``view`` sorted by the per-sample score of evaluation ``key``, lowest first.

    ``by="delta"`` sorts by the before/after difference (most harmed first). Samples
    without a score (not evaluated) are left out.
    """
    field = score_field(view, key, by)
    out = view.exists(field).sort_by(field)
    return out.limit(limit) if limit else out


def worst_ids(view, key: str, by: str = "miou", limit: int = 10) -> List[str]:
    """File stems of the ``limit`` worst samples (the VOC ids on a VOC import)."""
    import os

    paths = worst_samples(view, key, by, limit).values("filepath")
    return [os.path.splitext(os.path.basename(p))[0] for p in paths]
