"""Evaluate semantic segmentation fields the way WSSS papers score them, as FiftyOne runs.

``evaluate(view, ["seeds", "sepl"], "ground_truth")`` runs one FiftyOne segmentation
evaluation per prediction field, with sepl's method (``method="sepl"``), under the eval
key ``<field>`` by default, and stores:

- per sample: ``<key>_miou`` (mean IoU over the classes present in that image's GT or
  prediction, 255 ignored) and ``<key>_class_iou`` (``{class name: IoU}`` for those
  classes); with two fields, ``<after key>_delta`` = after - before per-sample mIoU;
- per run (``view.load_evaluation_results(key)``): the pixel confusion matrix (rows GT,
  columns prediction) accumulated over the whole view, ``results.iou()`` per class,
  ``results.miou()`` (mean over all classes, background included: the literature's
  pseudo-label figure), plus FiftyOne's usual report and confusion-matrix plot.

Unlike ``fo.evaluate_segmentations`` it never resizes a mask silently, reads masks in bulk
and scores IoU. ``dataset.delete_evaluation(key)`` removes the run and its fields.

In FiftyOne's terms it is a first-class segmentation evaluation: importing ``sepl.fo``
registers ``fo.evaluate_segmentations(view, "sepl", method="sepl")``; the results carry
FiftyOne's per-label matches (so the App's Model Evaluation panel opens the samples behind
a class or a confusion-matrix cell), treat class 0 as the "missing" background class for
accuracy/precision/recall as a native evaluation does, and report ``mIoU`` in
``results.metrics()`` and as the custom metric ``@sepl/sepl/miou`` (which the plugin also
provides for native segmentation evaluations: ``custom_metrics=["@sepl/sepl/miou"]``).

Class names: a prediction field whose mask targets name a value differently from the GT's
(e.g. the same classes in another order) is refused with both fields named, unless
``match_by="name"`` maps its values to the GT classes of the same names.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fiftyone as fo
import fiftyone.core.fields as fof
from fiftyone.utils.eval.segmentation import (
    SegmentationEvaluation,
    SegmentationEvaluationConfig,
    SegmentationResults,
)

from ..classes import IGNORE_INDEX
from ..errors import SeplError
from ._fill import Progress, raise_failures
from .convert import get_mask_targets

_CHUNK = 128


class SeplSegmentationEvaluationConfig(SegmentationEvaluationConfig):
    """Config of sepl's segmentation evaluation.

    Args:
        pred_field, gt_field: ``fo.Segmentation`` fields.
        num_classes: C; default: the size of the GT field's mask targets.
        ignore_index: GT value left out of every score (255).
        per_class_fields: store ``<key>_class_iou`` per sample.
        baseline_key: eval key of a "before" run; ``<key>_delta`` is stored when given.
        match_by: "index" (default): prediction value k is GT class k, and a prediction
            field whose mask targets name a value differently from the GT's is refused;
            "name": prediction values are mapped to the GT class of the same name.
    """

    def __init__(self, pred_field, gt_field, num_classes=None, ignore_index=IGNORE_INDEX,
                 per_class_fields=True, baseline_key=None, match_by="index", **kwargs):
        super().__init__(pred_field, gt_field, **kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.per_class_fields = per_class_fields
        self.baseline_key = baseline_key
        self.match_by = match_by

    @property
    def method(self):
        return "sepl"


def _fields(eval_key: str, config) -> List[str]:
    fields = [f"{eval_key}_miou"]
    if config.per_class_fields:
        fields.append(f"{eval_key}_class_iou")
    if config.baseline_key:
        fields.append(f"{eval_key}_delta")
    return fields


MATCH_BY = ("index", "name")
# the URI under which sepl's mIoU appears among an evaluation's custom metrics (the plugin's
# EvaluationMetric operator of that name computes it for native segmentation evaluations)
MIOU_METRIC_URI = "@sepl/sepl/miou"


class SeplSegmentationEvaluation(SegmentationEvaluation):
    """Confusion-matrix evaluation with per-sample and dataset IoU."""

    def register_run(self, samples, key, overwrite=True, cleanup=True):
        # check the class names before FiftyOne records anything: a refused run leaves nothing
        # (against the GT field's own targets; mask_targets= only reaches evaluate_samples)
        cfg = self.config
        gt_targets = get_mask_targets(samples._dataset, cfg.gt_field)
        if gt_targets:
            class_lookup(get_mask_targets(samples._dataset, cfg.pred_field), gt_targets, cfg.pred_field,
                         cfg.gt_field, getattr(cfg, "match_by", "index"), cfg.ignore_index)
        super().register_run(samples, key, overwrite=overwrite, cleanup=cleanup)

    def _prepare(self, samples, mask_targets=None) -> Tuple[List[str], Optional[np.ndarray]]:
        """(class names of the C GT classes, prediction value -> GT class lookup or None);
        ``mask_targets`` (``fo.evaluate_segmentations``'s argument) replaces the GT field's."""
        cfg = self.config
        ds = samples._dataset
        targets = {int(k): v for k, v in mask_targets.items()} if mask_targets else get_mask_targets(ds, cfg.gt_field)
        num_classes = cfg.num_classes or (max(targets) + 1 if targets else None)
        if not num_classes:
            raise SeplError(f"ground-truth field '{cfg.gt_field}' has no mask targets",
                            hint="set its mask targets or pass num_classes")
        classes = [targets.get(i, str(i)) for i in range(num_classes)]
        lut = class_lookup(get_mask_targets(ds, cfg.pred_field), targets, cfg.pred_field, cfg.gt_field,
                           getattr(cfg, "match_by", "index"), cfg.ignore_index)
        return classes, lut

    def register_samples(self, samples, eval_key):
        if eval_key is None:
            return
        ds = samples._dataset
        schema = {f"{eval_key}_miou": fof.FloatField()}
        if self.config.per_class_fields:
            schema[f"{eval_key}_class_iou"] = fof.DictField()
        if self.config.baseline_key:
            schema[f"{eval_key}_delta"] = fof.FloatField()
        merge = getattr(ds, "_merge_sample_field_schema", None)
        if merge is not None:  # one schema update and reload for all fields (~20 ms each)
            merge(schema)
            return
        for name, field in schema.items():  # pragma: no cover - FiftyOne without it
            ds.add_sample_field(name, type(field))

    def get_fields(self, samples, eval_key, include_custom_metrics=True):
        fields = _fields(eval_key, self.config)
        if include_custom_metrics:
            fields.extend(self.get_custom_metric_fields(samples, eval_key))
        return fields

    def rename(self, samples, eval_key, new_eval_key):
        ds = samples._dataset
        for old, new in zip(_fields(eval_key, self.config), _fields(new_eval_key, self.config)):
            if ds.has_sample_field(old):
                ds.rename_sample_field(old, new)
        self.rename_custom_metrics(samples, eval_key, new_eval_key)
        samples._rename_sidebar_group(eval_key, new_eval_key)

    def cleanup(self, samples, eval_key):
        ds = samples._dataset
        for f in _fields(eval_key, self.config):
            if ds.has_sample_field(f):
                ds.delete_sample_field(f)
        self.cleanup_custom_metrics(samples, eval_key)
        samples._delete_empty_sidebar_group(eval_key)

    def evaluate_samples(self, samples, eval_key=None, mask_targets=None, progress=None):
        cfg = self.config
        classes, lut = self._prepare(samples, mask_targets)
        num_classes = len(classes)
        # ``progress`` is ours (a callback(fraction, label)) when called from ``evaluate``
        # per-sample fields are written chunk by chunk on a thread while the next chunk is
        # scored (the database's rewrite of large sample documents overlaps the scoring)
        store = _PerSampleWriter(samples, eval_key, cfg, classes) if eval_key is not None else None
        try:
            cm, per_sample, failures = evaluate_arrays(samples, cfg.pred_field, cfg.gt_field, num_classes,
                                                          cfg.ignore_index, progress if callable(progress) else None,
                                                          pred_lut=lut, on_chunk=store)
        finally:
            if store is not None:
                store.close()
        results = SeplSegmentationResults(samples, cfg, eval_key, cm.matrix, classes,
                                          matches=_matches(per_sample, classes),
                                          missing=classes[0], backend=self)
        # pixels predicted outside 0..C-1 (e.g. a kept 255) are misses for their GT class
        results.missed = (cm.gt_counts - cm.matrix.sum(1)).tolist()
        results.failures = failures
        results.num_samples = len(per_sample)
        results.custom_metrics = dict(results.custom_metrics or {})
        results.custom_metrics[MIOU_METRIC_URI] = {"key": "mIoU", "value": results.miou(), "label": "mIoU",
                                                   "lower_is_better": False}
        return results


def _matches(per_sample, classes) -> List[Tuple[str, str, int, str, str]]:
    """FiftyOne's per-label matches: (GT class, predicted class, pixels, GT label id, predicted
    label id) for every non-zero cell of every scored sample's confusion matrix, so the App's
    Model Evaluation panel can open the samples behind a class or a matrix cell."""
    out = []
    for _, _, cells, (gid, pid) in per_sample.values():
        out.extend((classes[i], classes[j], n, gid, pid) for i, j, n in cells.tolist())
    return out


def _label_id(doc) -> Optional[str]:
    """The id of a stored label document, as ``label.id``."""
    return str(doc["_id"]) if doc.get("_id") is not None else None


def class_lookup(pred_targets: Dict[int, str], gt_targets: Dict[int, str], pred_field: str, gt_field: str,
                 match_by: str = "index", ignore_index: int = IGNORE_INDEX) -> Optional[np.ndarray]:
    """How prediction values become GT classes.

    Returns None when the values already mean the same classes (no mask targets on the
    prediction, or the same name for every value both name); with ``match_by="name"`` a
    (V,) int64 lookup table (prediction value -> GT value, others unchanged). Raises a
    SeplError naming both fields when the names differ and ``match_by`` is "index", or
    when a prediction class has no GT class of that name.
    """
    if match_by not in MATCH_BY:
        raise SeplError(f"unknown match_by '{match_by}'", hint=f"use one of {', '.join(MATCH_BY)}")
    pred_targets = {k: v for k, v in pred_targets.items() if k != ignore_index}
    differ = {k: v for k, v in sorted(pred_targets.items()) if gt_targets.get(k) != v}
    if not pred_targets or not differ:
        return None
    if match_by == "index":
        shown = ", ".join(f"{k}: '{v}' vs '{gt_targets.get(k)}'" for k, v in list(differ.items())[:5])
        raise SeplError(
            f"'{pred_field}' and '{gt_field}' name their values differently ({shown}"
            f"{', ...' if len(differ) > 5 else ''}): scoring them by value would compare different classes",
            hint=f"pass match_by='name' (--match-by name) to map '{pred_field}' classes to '{gt_field}' "
                 f"classes by name, or give '{pred_field}' the mask targets of '{gt_field}'")
    by_name = {v: k for k, v in gt_targets.items()}
    unknown = sorted({v for v in pred_targets.values() if v not in by_name})
    if unknown:
        raise SeplError(f"classes {unknown} of '{pred_field}' have no class of that name in '{gt_field}'",
                        hint=f"'{gt_field}' classes: {[gt_targets[k] for k in sorted(gt_targets)]}; rename them "
                             f"in the mask targets of '{pred_field}'")
    lut = np.arange(max(256, max(pred_targets) + 1), dtype=np.int64)
    for k, v in pred_targets.items():
        lut[k] = by_name[v]
    return lut


def confusion_iou(matrix: np.ndarray, ignore: Sequence[int] = ()) -> np.ndarray:
    """(C,) per-class IoU from a (C, C) pixel confusion matrix (rows GT, columns prediction),
    NaN for a class in neither; the classes in ``ignore`` (e.g. the row/column of 255 in a
    native FiftyOne evaluation) are NaN, their GT pixels left out and their predictions
    counted as misses."""
    m = np.asarray(matrix, dtype=np.float64).copy()
    ignore = list(ignore)
    m[ignore, :] = 0  # GT-ignore pixels are scored by no class
    tp = np.diag(m)
    union = m.sum(0) + m.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    iou[ignore] = np.nan
    return iou


class SeplSegmentationResults(SegmentationResults):
    """FiftyOne segmentation results plus the IoU figures of the WSSS literature.

    ``pixel_confusion_matrix`` is (C, C) int64, rows GT, columns prediction, GT-ignore
    pixels excluded; ``missed`` (C,) counts GT pixels predicted outside 0..C-1. As in a
    native FiftyOne segmentation evaluation, class 0 is the "missing" (background) class:
    ``metrics()``'s accuracy, precision and recall leave it out; ``metrics()["mIoU"]`` is
    ``miou()``; the per-label ids let the App open the samples behind a class or a cell.
    """

    failures: List[Tuple[str, str]] = []
    num_samples: int = 0
    missed: List[int] = []

    def iou(self) -> np.ndarray:
        """(C,) float64 per-class IoU over the whole evaluated view (NaN for a class in
        neither GT nor prediction), as ``sepl.metrics.ConfusionMatrix.iou``."""
        m = np.asarray(self.pixel_confusion_matrix, dtype=np.float64)
        tp = np.diag(m)
        missed = np.asarray(self.missed, dtype=np.float64) if len(self.missed) else 0.0
        union = m.sum(0) + m.sum(1) + missed - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes that occur (all C on VOC/COCO-sized views)."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def class_iou(self) -> Dict[str, float]:
        return {c: float(v) for c, v in zip(self.classes, self.iou())}

    def metrics(self, classes=None, average="micro", beta=1.0):
        """FiftyOne's metrics (accuracy, precision, recall, fscore, support: background left
        out, as in a native evaluation) plus ``mIoU`` (all classes, background included)."""
        m = super().metrics(classes=classes, average=average, beta=beta)
        m["mIoU"] = self.miou()
        return m

    def print_iou(self, digits: int = 2) -> None:
        for c, v in self.class_iou().items():
            print(f"{c:>16} {100 * v:6.{digits}f}")
        print(f"{'mIoU':>16} {100 * self.miou():6.{digits}f}")

    @classmethod
    def _from_dict(cls, d, samples, config, eval_key, **kwargs):
        res = super()._from_dict(d, samples, config, eval_key, **kwargs)
        res.failures = [tuple(f) for f in d.get("failures", [])]
        res.num_samples = d.get("num_samples", 0)
        res.missed = d.get("missed", [])
        return res


def evaluate_arrays(view, pred_field: str, gt_field: str, num_classes: int,
                    ignore_index: int = IGNORE_INDEX, progress: Progress = None, num_workers: Optional[int] = None,
                    pred_lut: Optional[np.ndarray] = None, on_chunk: Optional[Callable[[Dict[str, tuple]], None]] = None):
    """Score ``pred_field`` against ``gt_field`` on every sample of ``view``.

    Both fields are read per chunk as stored documents (the next chunk while the current one
    is scored) and scored on ``num_workers`` threads (default: all cores; the figures do not
    depend on it): decoding and counting release the GIL.

    Returns (the dataset ``sepl.metrics.ConfusionMatrix``, {sample id: (mIoU, {class:
    IoU}, (K, 3) int64 [GT class, predicted class, pixels] of the sample's non-zero
    confusion cells, (GT label id, predicted label id))}, [(sample name, error), ...]). A sample with a missing label, masks
    of different sizes or values outside 0..C-1 (255 allowed) is skipped and listed.
    ``pred_lut`` maps prediction values to GT classes first (see ``class_lookup``).
    ``on_chunk(scores)`` is called with each chunk's entries of that dict as it is scored.
    """
    from ..labels.pool import RowPool, resolve_workers
    from ..labels.rows import row_name
    from ..labels.scoring import ScorePair, sample_scores
    from ..metrics import ConfusionMatrix
    from ._fill import iter_rows

    total_count = view.count()
    total = ConfusionMatrix(num_classes=num_classes, ignore_index=ignore_index)
    per_sample: Dict[str, Tuple[float, Dict[int, float]]] = {}
    failures = []
    job = ScorePair(pred_field, gt_field, num_classes, ignore_index, pred_lut)
    workers = min(resolve_workers(num_workers), max(1, total_count // 32))
    chunks = iter_rows(view, [gt_field, pred_field], _CHUNK)
    done = 0
    with RowPool(workers, threads=True) as pool:
        rows = next(chunks, [])
        while rows:
            pending = pool.submit(job, rows)
            next_rows = next(chunks, [])  # read while the threads score
            scored = {}
            for row, (status, value) in zip(rows, pending.result()):
                if status != "ok":
                    failures.append((row_name(row), value[0]))
                    continue
                total._m += value
                docs = row["fields"]
                scored[row["id"]] = sample_scores(value, num_classes) + (
                    (_label_id(docs[gt_field]), _label_id(docs[pred_field])),)
            per_sample.update(scored)
            if on_chunk is not None and scored:
                on_chunk(scored)
            done += len(rows)
            rows = next_rows
            if callable(progress):
                progress(done / max(total_count, done, 1), f"evaluate {pred_field}: {done}/{total_count}")
    return total, per_sample, failures


class _PerSampleWriter:
    """Writes the per-sample fields of each scored chunk (``__call__``) through
    ``sepl.fo._fill.BulkWriter`` on one background thread (in-memory samples get the values
    without FiftyOne's per-sample reload); ``close()`` waits and re-raises its errors."""

    def __init__(self, samples, eval_key: str, cfg, classes: Sequence[str]):
        from concurrent.futures import ThreadPoolExecutor

        from ._fill import BulkWriter

        self.ds = samples._dataset
        self.key, self.cfg, self.classes = eval_key, cfg, list(classes)
        self.writer = BulkWriter(self.ds)
        self.pool = ThreadPoolExecutor(1)
        self.pending: list = []

    def __call__(self, scores: Dict[str, tuple]) -> None:
        running = []
        for f in self.pending:
            if f.done():
                f.result()  # a failed write stops the run now
            else:
                running.append(f)
        self.pending = running + [self.pool.submit(self._write, dict(scores))]

    def _write(self, scores: Dict[str, tuple]) -> None:
        key, cfg, classes = self.key, self.cfg, self.classes
        before = {}
        if cfg.baseline_key:
            before = dict(zip(*self.ds.select(list(scores)).values(["id", f"{cfg.baseline_key}_miou"])))
        updates = {}
        for i, (miou, class_iou, *_) in scores.items():
            miou = None if np.isnan(miou) else miou
            u = {f"{key}_miou": miou}
            if cfg.per_class_fields:
                u[f"{key}_class_iou"] = {classes[c]: v for c, v in class_iou.items()}
            if cfg.baseline_key:
                b = before.get(i)
                u[f"{key}_delta"] = miou - b if miou is not None and b is not None else None
            updates[i] = u
        self.writer.write(updates)

    def close(self) -> None:
        try:
            for f in self.pending:
                f.result()
        finally:
            self.pool.shutdown(wait=True)


def evaluate(
    view,
    pred_fields,
    gt_field: str = "ground_truth",
    eval_keys: Optional[Sequence[str]] = None,
    num_classes: Optional[int] = None,
    per_class_fields: bool = True,
    overwrite: bool = False,
    strict: bool = True,
    progress: Progress = None,
    match_by: str = "index",
) -> List[SeplSegmentationResults]:
    """Evaluate one or more prediction fields against ``gt_field`` on ``view``.

    Args:
        pred_fields: a field name or a list; with two, the second is compared to the first
            (``<key2>_delta`` per sample, e.g. seeds then SEPL).
        eval_keys: eval keys (default: the field names), hence fields ``<key>_miou``.
        num_classes: default: the GT field's mask targets.
        overwrite: replace an existing evaluation made with other fields or parameters
            (an identical one is simply recomputed).
        strict: raise a SeplError naming the samples that could not be scored (the others
            are stored first); with False they are only recorded in ``results.failures``.
        match_by: "index": a prediction field whose mask targets name classes differently
            from the GT's is refused (nothing is stored); "name": its values are mapped to
            the GT classes of the same names.

    Returns one results object per prediction field.
    """
    if isinstance(pred_fields, str):
        pred_fields = [pred_fields]
    pred_fields = list(pred_fields)
    if not pred_fields:
        raise SeplError("no prediction field given", hint="pass at least one Segmentation field")
    eval_keys = list(eval_keys) if eval_keys else [_as_key(f) for f in pred_fields]
    if len(eval_keys) != len(pred_fields):
        raise SeplError("give one eval key per prediction field")
    ds = view._dataset
    for f in [gt_field] + pred_fields:
        if not ds.has_field(f):
            raise SeplError(f"dataset '{ds.name}' has no field '{f}'",
                            hint=f"segmentation fields: {sorted(ds.get_field_schema(embedded_doc_type=fo.Segmentation))}")
        doc = getattr(ds.get_field(f), "document_type", None)
        if doc is None or not issubclass(doc, fo.Segmentation):
            raise SeplError(f"field '{f}' holds {getattr(doc, '__name__', 'no labels')}, not Segmentation",
                            hint="evaluate semantic label maps (fo.Segmentation fields)")
    gt_targets = get_mask_targets(ds, gt_field)
    for f in pred_fields:  # every field is checked before any evaluation is stored
        class_lookup(get_mask_targets(ds, f), gt_targets, f, gt_field, match_by)
    results = []
    for i, (field, key) in enumerate(zip(pred_fields, eval_keys)):
        baseline = eval_keys[0] if (len(pred_fields) == 2 and i == 1) else None
        config = SeplSegmentationEvaluationConfig(field, gt_field, num_classes=num_classes,
                                                  per_class_fields=per_class_fields, baseline_key=baseline,
                                                  match_by=match_by)
        _guard(view, key, config, overwrite)
        # FiftyOne's own driver: registers the run, calls our evaluate_samples, saves results
        res = fo.utils.eval.segmentation.evaluate_segmentations(view, field, gt_field=gt_field, eval_key=key,
                                                                 method=SeplSegmentationEvaluationConfig,
                                                                 progress=_scaled(progress, i, len(pred_fields)),
                                                                 **_kwargs(config))
        results.append(res)
    if strict:
        for r in results:
            raise_failures(r.failures, r.config.pred_field, r.num_samples)
    return results


def _scaled(progress: Progress, i: int, n: int):
    if progress is None:
        return False
    return lambda f, label: progress((i + f) / n, label)


def _kwargs(config) -> dict:
    return dict(num_classes=config.num_classes, ignore_index=config.ignore_index,
                per_class_fields=config.per_class_fields, baseline_key=config.baseline_key,
                match_by=config.match_by)


def _as_key(field: str) -> str:
    key = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in field)
    return key if key.isidentifier() else f"eval_{key}"


def _guard(view, key: str, config, overwrite: bool) -> None:
    """Refuse to replace an evaluation (or fields) made otherwise, unless ``overwrite``."""
    ds = view._dataset
    if ds.has_evaluation(key):
        old = ds.get_evaluation_info(key).config
        # the same prediction scored against the same GT is recomputed in place (its delta
        # and per-class fields follow the new call); anything else needs overwrite
        same = (getattr(old, "method", None) == "sepl" and old.pred_field == config.pred_field
                and old.gt_field == config.gt_field and getattr(old, "num_classes", None) == config.num_classes
                and getattr(old, "match_by", "index") == config.match_by)
        if same or overwrite:
            ds.delete_evaluation(key)
            return
        raise SeplError(f"evaluation '{key}' already exists on dataset '{ds.name}' with other parameters",
                        hint="pass overwrite (--overwrite), another eval key, or delete it")
    clash = [f for f in _fields(key, config) if ds.has_field(f)]
    if clash and not overwrite:
        raise SeplError(f"fields {clash} already exist and were not made by a sepl evaluation",
                        hint="pass overwrite (--overwrite) or another eval key")
    for f in clash:
        ds.delete_sample_field(f)


def register_method() -> None:
    """Make ``fo.evaluate_segmentations(..., method="sepl")`` use this evaluation (done when
    ``sepl.fo`` is imported; the App server imports it when it loads a sepl evaluation)."""
    backends = fo.evaluation_config.segmentation_backends
    backends.setdefault("sepl", {"config_cls": f"{__name__}.SeplSegmentationEvaluationConfig"})


register_method()


def results_miou(samples, results, ignore_index: int = IGNORE_INDEX) -> float:
    """mIoU of any FiftyOne segmentation evaluation's results, as ``SeplSegmentationResults.miou``:
    mean IoU over the classes that occur, background included; the class of value
    ``ignore_index`` (a native evaluation lists it as "255" or by its mask-target name) is
    left out of the GT and counts as a miss where predicted. NaN when no class occurs."""
    if isinstance(results, SeplSegmentationResults):
        return results.miou()
    classes = [str(c) for c in results.classes]
    names = {str(ignore_index)}
    if samples is not None:
        names.add(str(get_mask_targets(samples._dataset, results.config.gt_field).get(ignore_index)))
    iou = confusion_iou(results.pixel_confusion_matrix, [i for i, c in enumerate(classes) if c in names])
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
