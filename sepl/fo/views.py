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


def save_view(dataset, name: str, ids: Optional[List[str]] = None, tags: Optional[List[str]] = None,
              exists: Optional[List[str]] = None, missing: Optional[List[str]] = None,
              limit: Optional[int] = None, take: Optional[int] = None, seed: int = 0,
              overwrite: bool = False):
    """Save a view of ``dataset`` under ``name`` (what ``--view NAME`` in every command reads).

    The filters compose in this order: ``ids`` (sample ids or file names), sample ``tags``
    (any of), fields that must exist / be missing, then ``take`` (a random subset, fixed
    by ``seed``) or ``limit`` (the first N). Returns the saved view.
    """
    import os

    from fiftyone import ViewField as F

    from ..errors import SeplError

    if dataset.has_saved_view(name) and not overwrite:
        raise SeplError(f"dataset '{dataset.name}' already has a saved view '{name}'",
                        hint="choose another name or pass --overwrite")
    view = dataset.view()
    if ids:
        wanted = set(ids)
        sid, paths = dataset.values(["id", "filepath"])
        chosen = [i for i, p in zip(sid, paths)
                  if i in wanted or os.path.basename(p) in wanted or os.path.splitext(os.path.basename(p))[0] in wanted]
        if not chosen:
            raise SeplError(f"none of the {len(wanted)} ids or file names is a sample of '{dataset.name}'",
                            hint="give sample ids, file names or file stems")
        view = view.select(chosen, ordered=True)
    if tags:
        view = view.match_tags(tags)
    for f in list(exists or []) + list(missing or []):
        if not dataset.has_field(f):
            raise SeplError(f"dataset '{dataset.name}' has no field '{f}'",
                            hint=f"fields: {sorted(dataset.get_field_schema())}")
    for f in exists or []:
        view = view.exists(f)
    for f in missing or []:
        view = view.exists(f, False)
    if take is not None and limit is not None:
        raise SeplError("give --take or --limit, not both")
    for what, n in (("take", take), ("limit", limit)):
        if n is not None and n < 1:
            raise SeplError(f"--{what} must be at least 1, got {n}")
    if take is not None:
        view = view.take(take, seed=seed)
    elif limit is not None:
        view = view.limit(limit)
    if len(view) == 0:
        raise SeplError(f"the view '{name}' would hold no sample", hint="loosen the filters")
    if dataset.has_saved_view(name):
        dataset.delete_saved_view(name)
    dataset.save_view(name, view)
    return dataset.load_saved_view(name)
