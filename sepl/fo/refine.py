"""Refine with SEPL on a FiftyOne view: seeds + class-agnostic masks -> merged labels.

``refine(view, "seeds", "sam_masks", "sepl")`` writes, per sample:

- ``sepl``: the merged ``fo.Segmentation`` (mask targets copied from the seed field);
- ``sepl_masks`` (``decisions_field``): a copy of the mask ``fo.Detections`` whose
  ``label`` is the class the mask was taken for (or why it was not: ``"rejected"``,
  ``"background"``, ``"no_overlap"``, ``"empty"``), with attributes
  ``selected``, ``class_id``, ``class_name`` (the class it was tested against, also for
  a rejected mask), ``o_s``, ``o_p``, ``reason`` and ``source_id`` (the id of
  the mask in the masks field): filter ``selected == True`` in the App to see which masks
  changed which pixels.

The run is recorded under ``sepl_<out_field>`` with its parameters; rerunning the same
call resumes with the samples still missing the output, a different call on an existing
field is refused unless ``overwrite=True``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional

import numpy as np

import fiftyone as fo

from ..classes import IGNORE_INDEX
from ..errors import SeplError
from . import runs
from ._fill import Progress, disk_dir, fill_rows, raise_failures
from .convert import get_mask_targets, image_shape, load_label_map, load_masks, set_mask_targets


@dataclass
class RefineConfig:
    """Parameters of one SEPL merge (see ``sepl.merge.merge``)."""

    mode: str = "paper"
    os_thresh: float = 0.5
    op_thresh: float = 0.85
    keep_ignore: bool = False
    allow_empty: bool = False


def refine_sample(sample, seed_field: str, masks_field: str, config: RefineConfig,
                  targets: Dict[int, str]) -> np.ndarray:
    """Merge one in-memory sample's seed and masks (``SEPLModel``; ``refine`` works on
    stored documents in bulk, decisions included). Returns the (H, W) uint8 label map."""
    from ..labels.refine import check_seed
    from ..merge import merge

    shape = image_shape(sample)
    seed = load_label_map(sample, seed_field, shape=shape)
    check_seed(seed, len(targets), seed_field)
    masks = load_masks(sample, masks_field, shape=shape)
    res = merge(seed, masks, mode=config.mode, num_classes=len(targets), ignore_index=IGNORE_INDEX,
                keep_ignore=config.keep_ignore, os_thresh=config.os_thresh, op_thresh=config.op_thresh,
                allow_empty=config.allow_empty)
    return np.asarray(res.labels, dtype=np.uint8)


@runs.recorded
def refine(
    view,
    seed_field: str,
    masks_field: str,
    out_field: str = "sepl",
    mode: str = "paper",
    os_thresh: float = 0.5,
    op_thresh: float = 0.85,
    keep_ignore: bool = False,
    allow_empty: bool = False,
    decisions_field: Optional[str] = None,
    store_decisions: bool = True,
    storage: Optional[str] = None,
    mask_dir: Optional[str] = None,
    overwrite: bool = False,
    progress: Progress = None,
    num_workers: Optional[int] = None,
    chunk_size: Optional[int] = None,
) -> int:
    """Run the SEPL merge on every sample of ``view`` and store the result in ``out_field``.

    Args:
        view: a FiftyOne dataset or view.
        seed_field: ``fo.Segmentation`` seeds (CAM pseudo-labels), mask targets set.
        masks_field: ``fo.Detections`` with instance masks (SAM automatic masks).
        mode, os_thresh, op_thresh, keep_ignore, allow_empty: see ``sepl.merge.merge`` (an
            empty mask set is an error unless ``allow_empty``: it usually means a failed run).
        decisions_field: where per-mask decisions go (default ``<out_field>_masks``).
        storage: "db" or "disk" for the merged label maps (default: see ``sepl.fo._fill``).
        overwrite: replace an existing ``out_field`` made otherwise.
        progress: optional ``callback(fraction, label)``, called after each chunk.
        num_workers: merge processes (default: all cores); the output does not depend on it.
        chunk_size: samples read, merged and written together (``sepl.fo._fill``).

    Returns the number of samples written. Samples that cannot be merged (no seed, no
    masks, wrong size, unknown classes) are named in a SeplError raised after the others
    were stored.
    """
    ds = view._dataset
    check_refine_args(mode, os_thresh, op_thresh, chunk_size)
    for f, kind in ((seed_field, fo.Segmentation), (masks_field, fo.Detections)):
        if not ds.has_field(f):
            raise SeplError(f"dataset '{ds.name}' has no field '{f}'",
                            hint=f"fields: {sorted(ds.get_field_schema())}")
        ftype = ds.get_field(f)
        doc = getattr(ftype, "document_type", None)
        if doc is not None and not issubclass(doc, kind):
            raise SeplError(f"field '{f}' holds {doc.__name__}, not {kind.__name__}",
                            hint="choose a field of the right kind")
    if out_field in (seed_field, masks_field):
        raise SeplError(f"output field '{out_field}' is an input", hint="choose a new output field name")
    targets = get_mask_targets(ds, seed_field)
    if not targets:
        raise SeplError(f"seed field '{seed_field}' has no mask targets",
                        hint="set dataset.mask_targets for it (the importers do)")
    config = RefineConfig(mode=mode, os_thresh=os_thresh, op_thresh=op_thresh, keep_ignore=keep_ignore,
                          allow_empty=allow_empty)
    decisions_field = decisions_field or f"{out_field}_masks"
    params = dict(asdict(config), seed_field=seed_field, masks_field=masks_field,
                  decisions_field=decisions_field if store_decisions else None)
    extra = [decisions_field] if store_decisions else []
    run = runs.start_run(ds, out_field, "refine", params, overwrite=overwrite, extra_fields=extra, view=view)

    from ..labels.refine import RefineJob

    job = RefineJob(seed_field=seed_field, masks_field=masks_field, out_field=out_field,
                    decisions_field=decisions_field if store_decisions else None,
                    targets=tuple(sorted(targets.items())), disk_dir=disk_dir(ds, out_field, storage, mask_dir),
                    **asdict(config))
    # only the two input fields are read, as stored documents; merges run on num_workers processes
    done, failures = fill_rows(run.pending, [seed_field, masks_field], job, progress, what="refine",
                               chunk_size=chunk_size, num_workers=num_workers, mask_dir=mask_dir, claim=run.claim,
                               copies={decisions_field: masks_field} if store_decisions else None)
    set_mask_targets(ds, out_field, targets)
    raise_failures(failures, out_field, done)
    return done


def check_refine_args(mode: str, os_thresh: float, op_thresh: float, chunk_size: Optional[int] = None) -> None:
    """Refuse bad merge arguments before anything is created."""
    from ..merge import MODES

    runs.check_choice("merge mode", mode, MODES)
    runs.check_fraction("os_thresh", os_thresh)
    runs.check_fraction("op_thresh", op_thresh)
    if chunk_size is not None:
        runs.check_positive("chunk_size", chunk_size)
