"""Runs recorded the FiftyOne way: one run key per produced field, with its config.

A run key ``sepl_<field>`` records which command made a field and with which parameters
(``dataset.list_runs()``, ``dataset.get_run_info(key)``). This is what lets a command
resume instead of refusing: a field made by the same command with the same parameters
is picked up where it stopped; any other existing field is protected unless the caller
passes ``overwrite=True``.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

from ..errors import SeplError

_KEY_RE = re.compile(r"[^A-Za-z0-9_]")


def run_key(field: str) -> str:
    """The run key that records how ``field`` was produced."""
    return "sepl_" + _KEY_RE.sub("_", field)


def _same(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    return {k: a.get(k) for k in b} == b


def start_run(dataset, field: str, method: str, params: Dict[str, Any], overwrite: bool = False,
              extra_fields: Optional[List[str]] = None) -> bool:
    """Claim ``field`` (and ``extra_fields``) for a run of ``method`` with ``params``.

    Returns True when this resumes an earlier identical run (so only samples still
    missing the field need work), False for a fresh run. Raises SeplError when the field
    exists and was not made by an identical run, unless ``overwrite``: then the old
    fields' values are cleared, so nothing stale survives a partial rerun.

    ``params`` must be JSON-serialisable.
    """
    key = run_key(field)
    fields = [field] + list(extra_fields or [])
    exists = [f for f in fields if dataset.has_field(f)]
    previous = None
    if dataset.has_run(key):
        previous = dataset.get_run_info(key).config.serialize()
    params = dict(params, method=method, fields=fields)
    if exists and not overwrite:
        if previous is not None and _same(previous, params):
            return True
        made_by = f"by an earlier '{previous.get('method')}' run with other parameters" if previous else "elsewhere"
        raise SeplError(
            f"field '{field}' already exists on dataset '{dataset.name}' (made {made_by})",
            hint="choose another output field, or pass overwrite (--overwrite in the CLI)",
        )
    if overwrite:
        for f in exists:
            dataset.clear_sample_field(f)
    if previous is not None:
        dataset.delete_run(key)
    config = dataset.init_run(**params)
    dataset.register_run(key, config)
    return False


def pending_view(view, field: str, resume: bool):
    """The samples of ``view`` still lacking ``field`` when resuming, else all of ``view``."""
    if resume and view._dataset.has_field(field):
        return view.exists(field, False)
    return view


def delete_run(dataset, field: str, delete_fields: bool = True) -> None:
    """Delete the run that produced ``field`` and, by default, the fields it made."""
    key = run_key(field)
    if not dataset.has_run(key):
        raise SeplError(f"no sepl run produced field '{field}' on dataset '{dataset.name}'",
                        hint=f"runs here: {dataset.list_runs()}")
    fields = dataset.get_run_info(key).config.serialize().get("fields", [field])
    dataset.delete_run(key)
    if delete_fields:
        for f in fields:
            if dataset.has_field(f):
                dataset.delete_sample_field(f)
