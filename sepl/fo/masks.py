"""Class-agnostic masks on FiftyOne samples: generate, resume, shard over workers.

Masks land in a ``fo.Detections`` field (one detection per mask, instance mask cropped to
its box, ``confidence`` = SAM's predicted IoU) with ``area``, ``predicted_iou``,
``stability_score`` and ``source`` on each detection; the run that made the field is
recorded (``sepl.fo.runs``) so a rerun with the same parameters only processes samples still
lacking it. ``shard=(i, n)`` restricts a run to a fixed 1/n of the view, so n workers
(delegated operations on one MongoDB) share a dataset without overlap.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fiftyone as fo

from ._models import LoaderModel
from ..errors import SeplError
from ..masks.base import MaskSet, MaskSource
from ..labels.masksets import GenerateRow, load_row_image, mask_set_doc
from ..labels.pool import resolve_workers
from ..labels.rows import row_name
from ._fill import BulkWriter, fill_rows, read_rows
from . import runs
from .runs import start_run

log = logging.getLogger(__name__)

SOURCES = ("sam_auto", "sam_box", "superpixels", "sam2_auto", "samhq_auto")
AUTO_PARAMS = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
               "stability_score_offset", "box_nms_thresh", "crop_n_layers", "crop_nms_thresh",
               "crop_overlap_ratio", "crop_n_points_downscale_factor", "min_mask_region_area")
SUPERPIXEL_PARAMS = ("mode", "scales", "sigma", "min_size", "min_area_frac", "max_area_frac", "max_side",
                     "include_base", "partitions")


def make_source(source: str = "sam_auto", model_type: str = "vit_h", checkpoint: Optional[str] = None,
                device: str = "auto", dtype: Optional[str] = None, image_batch: int = 4,
                download: bool = False, multimask: bool = False, random_weights: bool = False, **params):
    """A mask source by name: "sam_auto" (``SamAutoMasks``), "sam_box" (``BoxPromptedSAM``)
    or "superpixels" (``HierarchicalSuperpixels``, not SAM). ``params`` go to the source."""
    if source == "superpixels":
        from ..masks.superpixels import HierarchicalSuperpixels

        return HierarchicalSuperpixels(**{k: v for k, v in params.items() if k in SUPERPIXEL_PARAMS})
    if source not in SOURCES:
        hint = f"use one of {', '.join(SOURCES)}, or zoo:<FiftyOne zoo SAM> with generate_masks"
        raise SeplError(f"unknown mask source '{source}'", hint=hint)
    if source in ("sam2_auto", "samhq_auto"):  # transformers' SAM 2 / SAM-HQ; checkpoint = folder, file or hub name
        from ..masks.sam2_auto import build_auto_masks

        return build_auto_masks(source[:-5], checkpoint, device=device, dtype=dtype, image_batch=image_batch,
                                random_weights=random_weights or bool(params.pop("random_weights", False)),
                                **{k: v for k, v in params.items() if k in AUTO_PARAMS})
    from ..masks.build import build_sam
    from ..masks.checkpoints import sam_weights

    path = sam_weights(model_type, checkpoint, random_weights, download_missing=download)
    sam = build_sam(model_type, path, device=device, random_weights=random_weights)
    if source == "sam_box":
        from ..masks.sam_box import BoxPromptedSAM

        return BoxPromptedSAM(sam, multimask=multimask, image_batch=image_batch, dtype=dtype)
    from ..masks.sam_auto import SamAutoMasks

    return SamAutoMasks(sam, image_batch=image_batch, dtype=dtype, model_type=model_type,
                        **{k: v for k, v in params.items() if k in AUTO_PARAMS})


def to_detections(ms: MaskSet, label: str = "mask", labels: Optional[Sequence[str]] = None) -> fo.Detections:
    """``fo.Detections`` for a MaskSet (per-detection area, predicted IoU, stability, source):
    the document the bulk path stores (``sepl.labels.masksets.mask_set_doc``), as labels."""
    return fo.Detections._from_son(mask_set_doc(ms, label, labels))


def _prompt_boxes(row, field: str, hw: Tuple[int, int]) -> Tuple[np.ndarray, List[str]]:
    from ..labels.raw import box_pixels

    dets = row["fields"].get(field)
    if dets is not None and dets.get("_cls") != "Detections":
        raise SeplError(f"prompt field '{field}' is a {dets.get('_cls')}, not Detections",
                        hint="pick a Detections field of boxes")
    items = [] if dets is None else dets.get("detections") or []
    boxes = np.array([box_pixels(d.get("bounding_box") or (0, 0, 0, 0), *hw) for d in items],
                     np.float32).reshape(-1, 4)
    return boxes, [d.get("label") for d in items]


def shard_view(view, shard: Optional[Tuple[int, int]]):
    """Shard ``i`` of ``n`` of ``view``: every n-th sample by sorted id (stable across reruns)."""
    if shard is None:
        return view
    i, n = shard
    if not (0 <= i < n):
        raise SeplError(f"shard {i} of {n} does not exist", hint="shards are numbered 0..n-1")
    ids = sorted(view.values("id"))
    return view.select(ids[i::n], ordered=True)


def run_params(source: str, model_type: str, params: Dict[str, Any], checkpoint: Optional[str],
               prompt_field: Optional[str], random_weights: bool = False) -> Dict[str, Any]:
    """What a run records (and a resume must match): JSON-serialisable."""
    if source.startswith("zoo:"):  # a FiftyOne zoo model: its name says it all
        return {"source": source, "params": {}}
    out = {"source": source, "params": {k: params[k] for k in sorted(params)}}
    if source != "superpixels":
        out["model_type"] = model_type
        out["checkpoint"] = os.path.basename(checkpoint) if checkpoint else None
        if random_weights:  # masks of an untrained SAM: the record must say so
            out["random_weights"] = True
    else:
        out["not_sam"] = True
    if source == "sam_box":
        out["prompt_field"] = prompt_field
    return out


def prepare_run(dataset, out_field: str, source: str, model_type: str, params: Dict[str, Any],
                checkpoint: Optional[str] = None, prompt_field: Optional[str] = None,
                overwrite: bool = False, random_weights: bool = False) -> bool:
    """Record ``out_field`` for this run and declare it (so shards can start in any order),
    without computing. Returns True when resuming an identical earlier run."""
    check_mask_args(source, 1, checkpoint, params)
    run = start_run(dataset, out_field, "masks",
                    run_params(source, model_type, params, checkpoint, prompt_field, random_weights),
                    overwrite=overwrite)
    try:
        run.commit()
        if not dataset.has_field(out_field):
            dataset.add_sample_field(out_field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    finally:
        run.finish(keep=True)
    return run.resumed


_FRACTIONS = ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh", "crop_overlap_ratio")


def check_mask_args(source: str, batch_size: int, checkpoint: Optional[str], params: Dict[str, Any]) -> None:
    """Refuse bad arguments before anything is created."""
    runs.check_choice("mask source", source, SOURCES)
    runs.check_positive("batch size", batch_size)
    if source in ("sam_auto", "sam_box"):  # SAM 2 / HQ checkpoints may be hub names; zoo models are FiftyOne's
        runs.check_file("SAM checkpoint", checkpoint)
    for k in _FRACTIONS:
        runs.check_fraction(k, params.get(k))


@runs.recorded
def generate_masks(
    view,
    out_field: str = "sam_masks",
    source: str = "sam_auto",
    model_type: str = "vit_h",
    checkpoint: Optional[str] = None,
    params: Optional[Dict[str, Any]] = None,
    prompt_field: Optional[str] = None,
    device: str = "auto",
    dtype: Optional[str] = None,
    batch_size: int = 4,
    download: bool = False,
    multimask: bool = False,
    overwrite: bool = False,
    shard: Optional[Tuple[int, int]] = None,
    progress: Optional[Callable[[float, str], None]] = None,
    mask_source: Optional[MaskSource] = None,
    num_workers: Optional[int] = None,
    random_weights: bool = False,
) -> Dict[str, Any]:
    """Generate class-agnostic masks for the samples of ``view`` into ``out_field``.

    Args:
        source: "sam_auto", "sam_box" (one mask per box of ``prompt_field``),
            "superpixels" (classical, NOT SAM), or "zoo:<name>" for a FiftyOne model-zoo SAM
            (e.g. "zoo:segment-anything-vitb-torch", see ``sepl.fo.zoo``; ``mask_source``
            is then an already loaded zoo model).
        params: the source's parameters (e.g. ``points_per_side``, ``pred_iou_thresh``).
        batch_size: images per batch (the SAM encoder runs them together).
        shard: ``(i, n)``: only this worker's fixed share of the view.
        progress: called with (fraction, message) after each batch.
        mask_source: an already-built source (skips building one from the arguments).
        num_workers: CPU sources (superpixels) segment on this many processes; model sources
            decode images on this many loader threads while the model runs (default: all
            cores). Each batch is written with one bulk write.
        random_weights: allow SAM without a checkpoint (random weights: tests only); recorded.

    Returns a summary: ``processed``, ``skipped`` (already done), ``failed`` (list of
    "sample: error"), ``source``. Samples that fail (unreadable image, bad prompts) are
    reported and left without the field, so a rerun retries them; the others are saved.
    """
    from .zoo import generate_zoo_masks, zoo_name

    if zoo_name(source):  # "zoo:<FiftyOne zoo model>": FiftyOne runs it (sepl.fo.zoo)
        return generate_zoo_masks(view, out_field, zoo_name(source), batch_size=batch_size, download=download,
                                  overwrite=overwrite, shard=shard, progress=progress, model=mask_source)
    params = dict(params or {})
    dataset = view._dataset
    check_mask_args(source, batch_size, checkpoint, params)
    if source == "sam_box" and not prompt_field:
        raise SeplError("box-prompted masks need a prompt field", hint="pass the Detections field holding the boxes")
    if source == "sam_box" and not dataset.has_field(prompt_field):
        raise SeplError(f"the dataset has no field '{prompt_field}'", hint="pick the Detections field holding the boxes")
    if mask_source is not None:
        from ..masks.build import is_random

        random_weights = is_random(mask_source)
    elif source in ("sam_auto", "sam_box"):  # before anything is stored: no checkpoint is an error, not random SAM
        from ..masks.checkpoints import sam_weights

        random_weights = sam_weights(model_type, checkpoint, random_weights, download) is None
    elif source in ("sam2_auto", "samhq_auto"):  # transformers' loader checks its own checkpoint
        random_weights = bool(random_weights or params.pop("random_weights", False))
    else:
        random_weights = False
    key_params = run_params(source, model_type, params, checkpoint, prompt_field, random_weights)
    mine = shard_view(view, shard)
    # shards and concurrent identical runs share the lease; their samples are claimed one batch at a time
    run = start_run(dataset, out_field, "masks", key_params, overwrite=overwrite, view=mine)
    todo = run.pending
    total, n_todo = len(mine), len(todo)
    summary: Dict[str, Any] = {"processed": 0, "skipped": total - n_todo, "failed": [], "source": source}
    if n_todo == 0:
        return summary
    src = mask_source or make_source(source, model_type, checkpoint, device=device, dtype=dtype,
                                     image_batch=batch_size, download=download, multimask=multimask,
                                     random_weights=random_weights, **params)
    summary["source"] = getattr(src, "name", source)
    if not getattr(src, "is_sam", True):
        log.warning("'%s' is filled by %s: these are not SAM masks", out_field, summary["source"])
    run.commit()  # the source is built: from here on the field changes
    if not dataset.has_field(out_field):
        dataset.add_sample_field(out_field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    if num_workers is not None and num_workers != 1 and source == "superpixels":
        _generate_on_cores(todo, out_field, src, summary, progress, num_workers, claim=run.claim)
    else:
        _generate_batches(todo, out_field, src, source, prompt_field, batch_size, summary, progress,
                          loader_threads=resolve_workers(num_workers), claim=run.claim)
    return summary


def _generate_on_cores(todo, out_field, src, summary, progress, num_workers, claim=None) -> None:
    """CPU sources (superpixels): decode + segment each image on ``num_workers`` processes."""
    done, failures = fill_rows(todo, [], GenerateRow(src, out_field), progress, what="masks",
                               num_workers=num_workers, claim=claim)
    summary["processed"] += done
    for name, msg in failures:
        summary["failed"].append(f"{name}: {msg}")
        log.error("%s: %s", name, msg)


def _generate_batches(todo, out_field, src, source, prompt_field, batch_size, summary, progress,
                      loader_threads: int = 2, claim=None) -> None:
    """Model sources: the next batch's rows are read and its images decoded by loader threads
    while the model runs on this one; each batch is stored with one bulk write. ``claim``:
    see ``fill_rows`` (only the ids it returns are computed)."""
    from concurrent.futures import ThreadPoolExecutor

    dataset = todo._dataset
    ids = todo.values("id")
    fields = [prompt_field] if source == "sam_box" else []
    writer = BulkWriter(dataset)
    with ThreadPoolExecutor(max(1, loader_threads)) as decode, ThreadPoolExecutor(1) as prefetch:
        def load(start):
            chunk = ids[start:start + batch_size] if claim is None else claim(ids[start:start + batch_size])
            if not chunk:
                return [], []
            rows = read_rows(todo, chunk, fields)
            return rows, list(decode.map(_try_image, rows))

        starts = list(range(0, len(ids), batch_size))
        nxt = prefetch.submit(load, starts[0]) if starts else None
        for k, start in enumerate(starts):
            rows, images = nxt.result()
            if k + 1 < len(starts):
                nxt = prefetch.submit(load, starts[k + 1])
            ok_rows, ok_images = [], []
            for row, im in zip(rows, images):
                if isinstance(im, SeplError):
                    msg = str(SeplError(im.message, hint=im.hint, sample=row_name(row)))
                    summary["failed"].append(msg)
                    log.error("%s", msg)
                else:
                    ok_rows.append(row)
                    ok_images.append(im)
            if ok_rows:
                docs = _run_batch(src, source, ok_rows, ok_images, prompt_field, summary)
                updates = {r["id"]: {out_field: d} for r, d in zip(ok_rows, docs) if d is not None}
                names = {r["id"]: row_name(r) for r in ok_rows}
                for name, msg in writer.write(updates, names):
                    summary["failed"].append(f"{name}: {msg}")
                summary["processed"] += len(updates)
            if progress is not None:
                done = min(start + batch_size, len(ids))
                progress(done / len(ids), f"masks for {done}/{len(ids)} samples")


def _try_image(row):
    try:
        return load_row_image(row)
    except SeplError as e:
        return e


def _run_batch(src, source, rows, images, prompt_field, summary) -> List[Optional[dict]]:
    if source == "sam_box":
        boxes, names = [], []
        out: List[Optional[dict]] = [None] * len(rows)
        for r, im in zip(rows, images):
            try:
                b, n = _prompt_boxes(r, prompt_field, im.shape[:2])
            except SeplError as e:
                summary["failed"].append(str(SeplError(e.message, hint=e.hint, sample=row_name(r))))
                b, n = None, None
            boxes.append(b)
            names.append(n)
        keep = [k for k, b in enumerate(boxes) if b is not None]
        results = src.predict_batch([images[k] for k in keep], [boxes[k] for k in keep])
        for k, (masks, scores) in zip(keep, results):
            ms = MaskSet(masks, source="sam_box", predicted_iou=scores)
            out[k] = mask_set_doc(ms, labels=names[k])
        return out
    try:
        sets = src.generate_batch(images)
    except SeplError as e:
        if len(rows) == 1:
            raise SeplError(e.message, hint=e.hint, sample=row_name(rows[0]))
        # find the culprit: one at a time, so the others still get their masks
        return [_one(src, r, im, summary) for r, im in zip(rows, images)]
    return [mask_set_doc(ms) for ms in sets]


def _one(src, row, image, summary) -> Optional[dict]:
    try:
        return mask_set_doc(src.generate(image))
    except SeplError as e:
        summary["failed"].append(str(SeplError(e.message, hint=e.hint, sample=row_name(row))))
        return None


class MaskSourceModel(LoaderModel):
    """A mask source as a FiftyOne model: ``dataset.apply_model(MaskSourceModel(src), "masks",
    batch_size=4, num_workers=2)``: batches of HxWx3 uint8 RGB arrays (any sizes) go to
    ``src.generate_batch``; each prediction is a ``fo.Detections``. The run is recorded
    (method ``apply_model:MaskSourceModel``, the source's name).
    """

    def __init__(self, source: MaskSource):
        self.source = source

    def run_params(self):
        src = self.source
        return {"source": getattr(src, "name", type(src).__name__), "is_sam": bool(getattr(src, "is_sam", True)),
                "model_type": getattr(src, "model_type", None)}

    def predict(self, arg):
        return to_detections(self.source.generate(np.asarray(arg)))

    def predict_all(self, args):
        return [to_detections(ms) for ms in self.source.generate_batch([np.asarray(a) for a in args])]


def queue_shards(operator_uri: str, dataset, view, params: Dict[str, Any], num_shards: int) -> List[str]:
    """Queue ``num_shards`` delegated runs of ``operator_uri``, shard i of n each, on ``view``.

    Each worker (``fiftyone delegated launch``, one per GPU or machine, all on the same
    MongoDB) picks up one; a shard's samples are fixed, so none is done twice. The dataset
    must be persistent for other processes to see it. Returns the operation ids.
    """
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext

    if not dataset.persistent:
        raise SeplError(f"dataset '{dataset.name}' is not persistent, so other workers cannot see it",
                        hint="set dataset.persistent = True")
    service = DelegatedOperationService()
    stages = (view.view() if isinstance(view, fo.Dataset) else view)._serialize()
    ids = []
    for i in range(num_shards):
        request = dict(dataset_name=dataset.name, view=stages, delegated=True,
                       params=dict(params, shard=i, num_shards=num_shards, delegate=True, target="CURRENT_VIEW"))
        op = service.queue_operation(operator=operator_uri, label=f"Generate masks (shard {i + 1}/{num_shards})",
                                     context=ExecutionContext(request_params=request).serialize())
        ids.append(str(op.id))
    return ids
