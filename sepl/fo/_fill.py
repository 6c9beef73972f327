"""Filling one label field sample by sample: progress, per-sample errors, safe writes.

Every feature of ``sepl.fo`` that writes a field per sample goes through ``fill_field``,
so they all behave alike: a sample that fails (missing input, wrong size, corrupt file)
is reported by name and skipped, the others are written, and what was stored before is
never touched.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

from ..errors import SeplError
from .convert import sample_name

Progress = Optional[Callable[[float, str], None]]

# how many failures an error message lists by name before summarising
_LISTED = 5


def fill_field(view, field: str, compute: Callable, progress: Progress = None, what: str = "samples",
               every: int = 25) -> Tuple[int, List[Tuple[str, str]]]:
    """Set ``sample[field] = compute(sample)`` on every sample of ``view``.

    ``compute`` returns the value to store (or a dict ``{field: value}`` to set several),
    or raises SeplError for a sample it cannot process: that sample is left as it was and
    reported. ``progress(fraction, label)`` is called every ``every`` samples.

    Returns (number of samples written, [(sample name, error message), ...]).
    """
    total = len(view)
    done, failures = 0, []
    for i, sample in enumerate(view.iter_samples(progress=progress is None, autosave=True)):
        try:
            value = compute(sample)
        except SeplError as e:
            failures.append((sample_name(sample), e.message + (f" (fix: {e.hint})" if e.hint else "")))
            continue
        if isinstance(value, dict):
            for k, v in value.items():
                sample[k] = v
        else:
            sample[field] = value
        done += 1
        if progress is not None and (i % every == 0 or i == total - 1):
            progress((i + 1) / max(total, 1), f"{what}: {i + 1}/{total}")
    return done, failures


def raise_failures(failures: List[Tuple[str, str]], field: str, done: int) -> None:
    """Raise one SeplError naming the samples that failed (the others were written)."""
    if not failures:
        return
    lines = [f"{name}: {msg}" for name, msg in failures[:_LISTED]]
    more = f"; and {len(failures) - _LISTED} more" if len(failures) > _LISTED else ""
    raise SeplError(
        f"{len(failures)} sample(s) could not be processed for '{field}' ({done} written): "
        + "; ".join(lines) + more,
        hint="fix those inputs and rerun the same command: it resumes with the missing samples only",
    )


# Where label maps go: "db" (in the sample document) or "disk" (a PNG per sample,
# ``mask_path``). The default comes from benchmarks/bench_fo_storage.py (see README).
DEFAULT_STORAGE = "db"
STORAGES = ("db", "disk")


def storage_choice(storage: Optional[str]) -> str:
    """``storage``, else ``$SEPL_MASK_STORAGE``, else the default; validated."""
    import os

    choice = storage or os.environ.get("SEPL_MASK_STORAGE") or DEFAULT_STORAGE
    if choice not in STORAGES:
        raise SeplError(f"unknown mask storage '{choice}'", hint=f"use one of {STORAGES}")
    return choice


def make_segmentation(label, dataset, field: str, key: str, storage: Optional[str] = None,
                      mask_dir: Optional[str] = None):
    """A ``fo.Segmentation`` for the (H, W) uint8 ``label``: in the database, or written to
    ``<mask dir>/<field>/<key>.png`` when the storage is "disk"."""
    from .convert import mask_dir_for, to_segmentation

    if storage_choice(storage) == "db":
        return to_segmentation(label)
    return to_segmentation(label, mask_path=str(mask_dir_for(dataset, field, mask_dir) / f"{key}.png"))
