"""Masks from a FiftyOne model-zoo SAM (``segment-anything-*``) for SEPL.

    generate_masks(view, "zoo_masks", source="zoo:segment-anything-vitb-torch")
    refine(view, "seeds", "zoo_masks", "sepl")

FiftyOne's SAM zoo models, applied without prompts, run segment-anything's automatic mask
generator and store one ``fo.Detection`` per mask (instance mask cropped to its box,
``confidence`` = predicted IoU, ``stability``). sepl reads such a field as it reads its own
masks (same full-image masks, so the same merge: tested), so the zoo model is run by
FiftyOne's own ``apply_model`` (its data loader, batching, devices) and sepl only records the
run, resumes it and checks that the model is there. The weights download at load time where
a network exists (``download=True``, ``--download``); offline the error names the model, its
weights and the folder they go to.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

import fiftyone as fo

from ..errors import SeplError
from .convert import sample_name
from .runs import recorded, start_run

log = logging.getLogger(__name__)

PREFIX = "zoo:"
# apply_model per chunk: progress between chunks, and a rerun resumes from the last one
_CHUNK = 64


def zoo_name(source: str) -> Optional[str]:
    """The zoo model name of a ``"zoo:<name>"`` source, else None."""
    return source[len(PREFIX):] if isinstance(source, str) and source.startswith(PREFIX) else None


def sam_zoo_models() -> List[str]:
    """The image SAM models of FiftyOne's zoo manifest (``segment-anything-*``, not video)."""
    import fiftyone.zoo as foz

    return sorted(n for n in foz.list_zoo_models() if n.startswith("segment-anything") and "video" not in n)


def _weights(name: str) -> str:
    import fiftyone.zoo as foz

    try:
        zm = foz.get_zoo_model(name)
        return getattr(zm.manager.config, "url", None) or getattr(zm.manager.config, "google_drive_id", None) or "?"
    except Exception:
        return "?"


def check_zoo_model(name: str, download: bool = False) -> None:
    """Raise a SeplError unless ``name`` is in FiftyOne's zoo and its weights are downloaded
    (or ``download`` is on): an unknown name lists the SAM models; missing weights are
    named with the zoo folder and the fixes. Needs no network."""
    import fiftyone.zoo as foz

    if name not in foz.list_zoo_models():
        raise SeplError(f"'{name}' is not a model of FiftyOne {fo.__version__}'s zoo",
                        hint=f"SAM models there: {', '.join(sam_zoo_models())}")
    if not download and not foz.is_zoo_model_downloaded(name):
        raise SeplError(f"zoo model '{name}' is not downloaded (no weights in {fo.config.model_zoo_dir})",
                        hint=_fix(name))


def _fix(name: str) -> str:
    return (f"where a network exists pass download (--download) or run `fiftyone zoo models download {name}`; "
            f"offline, put its weights ({_weights(name)}) in {fo.config.model_zoo_dir}, or use "
            f"--source sam_auto --checkpoint FILE (the same SAM weights with sepl's own generator)")


def load_zoo_model(name: str, download: bool = False, **kwargs: Any):
    """``foz.load_zoo_model(name)`` after ``check_zoo_model``; load failures (no network,
    missing requirements, corrupt weights) become a SeplError with the same fixes."""
    import fiftyone.zoo as foz

    check_zoo_model(name, download)
    try:
        return foz.load_zoo_model(name, **kwargs)
    except Exception as e:
        raise SeplError(f"cannot load zoo model '{name}': {type(e).__name__}: {e}", hint=_fix(name))


@recorded
def generate_zoo_masks(
    view,
    out_field: str,
    name: str,
    batch_size: int = 4,
    download: bool = False,
    overwrite: bool = False,
    shard: Optional[Tuple[int, int]] = None,
    progress: Optional[Callable[[float, str], None]] = None,
    model=None,
    **load_kwargs: Any,
) -> Dict[str, Any]:
    """Run zoo model ``name`` (automatic masks, no prompts) on ``view`` into ``out_field``.

    Recorded as a "masks" run with ``source="zoo:<name>"``: a rerun resumes with the samples
    still missing the field. ``model``: an already loaded model (skips loading). Returns
    the summary of ``sepl.fo.masks.generate_masks`` (``processed``, ``skipped``, ``failed``,
    ``source``).
    """
    from .masks import run_params, shard_view

    dataset = view._dataset
    source = PREFIX + name
    if model is None:  # before anything is recorded: a run that cannot start leaves nothing
        check_zoo_model(name, download)
    mine = shard_view(view, shard)
    run = start_run(dataset, out_field, "masks", run_params(source, "", {}, None, None), overwrite=overwrite,
                    view=mine, shared=False)
    ids = run.pending.values("id")
    summary: Dict[str, Any] = {"processed": 0, "skipped": len(mine) - len(ids), "failed": [], "source": source}
    if not ids:
        return summary
    if model is None:
        model = load_zoo_model(name, download=download, **load_kwargs)
    run.commit()  # the model is loaded: from here on the field changes
    if not dataset.has_field(out_field):
        dataset.add_sample_field(out_field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    log.info("masks for %d samples from zoo model %s", len(ids), name)
    for start in range(0, len(ids), _CHUNK):
        chunk = dataset.select(ids[start:start + _CHUNK], ordered=True)
        # FiftyOne's own inference; a sample that fails is logged there and left without the field
        chunk.apply_model(model, label_field=out_field, batch_size=batch_size, skip_failures=True, progress=False)
        if progress is not None:
            done = min(start + _CHUNK, len(ids))
            progress(done / len(ids), f"masks for {done}/{len(ids)} samples ({name})")
    todo_view = dataset.select(ids)
    missing = todo_view.exists(out_field, False)
    summary["failed"] = [f"{sample_name(s)}: zoo model '{name}' gave no masks (see the log)" for s in missing]
    summary["processed"] = len(ids) - len(summary["failed"])
    return summary
