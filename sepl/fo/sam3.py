"""SAM 3 pseudo-labels on FiftyOne samples.

Per sample: the image-level labels in ``tags_field`` become concept prompts; the label map
goes to ``label_field`` (``fo.Segmentation``, mask targets set) and every kept instance to
``detections_field`` (``fo.Detections``: class label, score as ``confidence``, ``phrase``,
``presence``, ``sam3_box``). Those instance masks are class-agnostic masks too: point
``sepl.fo.refine(view, seeds, masks_field=detections_field)`` at them for "SAM 3 masks + CAM
seeds through SEPL". Samples whose image cannot be read are reported and left without the
fields, so a rerun with the same parameters retries only them.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

import fiftyone as fo
import fiftyone.core.models as fom

from ._models import ImageModel
from ..classes import VOC_CLASSES
from ..errors import SeplError
from ..grounded.pipeline import sum_counts
from ..sam3.pipeline import Sam3Config, Sam3PseudoLabels, Sam3Result
from . import runs
from .convert import image_labels, masks_to_detections, sample_name, set_mask_targets, to_segmentation
from .grounded import dataset_classes

logger = logging.getLogger(__name__)

METHOD = "sam3"


def result_to_labels(result: Sam3Result, class_names: Sequence[str]) -> Dict[str, fo.Label]:
    """``{"labels": fo.Segmentation, "detections": fo.Detections}`` for one pipeline result."""
    h, w = result.label.shape
    boxes = result.boxes / np.array([w, h, w, h], np.float32) if len(result.boxes) else result.boxes
    dets = masks_to_detections(
        result.masks, label="object", scores=result.scores,
        attributes=dict(phrase=list(result.phrases), presence=result.presence.tolist(),
                        sam3_box=[[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]))
    for d, c in zip(dets.detections, result.class_ids):
        d.label = str(class_names[int(c)])
    return dict(labels=to_segmentation(result.label), detections=dets)


@runs.recorded
def sam3_pseudo_labels(
    view,
    tags_field: str,
    label_field: str = "sam3",
    detections_field: Optional[str] = None,
    config: Optional[Sam3Config] = None,
    classes: Optional[Sequence[str]] = None,
    pipeline: Optional[Sam3PseudoLabels] = None,
    device: str = "auto",
    batch_size: int = 4,
    overwrite: bool = False,
    progress: Optional[Callable[[float, str], None]] = None,
) -> dict:
    """SAM 3 pseudo-labels for the samples of ``view``; resumes an identical earlier run.

    Args:
        view: a dataset or view.
        tags_field: image-level labels (``fo.Classifications``) of each sample.
        label_field: output ``fo.Segmentation`` field.
        detections_field: output ``fo.Detections`` (default ``<label_field>_detections``).
        config: the run's ``Sam3Config`` (recorded; a rerun with the same one resumes).
        classes: class names from index 0 (default: the dataset's mask targets, else VOC).
        pipeline: an already built pipeline for ``config`` (skips loading the model).
        batch_size: images per batch.
        overwrite: replace existing output fields made otherwise.
        progress: ``callback(fraction, label)``.

    Returns:
        ``{"samples", "resumed", "counts", "warnings": [(sample, msg)], "failed": ["sample: error"]}``;
        ``counts`` has ``empty_tags`` and ``no_instance`` (images left all background), ``kept``,
        ``below_score_threshold``, ``absent`` (phrases below the presence threshold).
    """
    config = config or Sam3Config()
    dataset = view._dataset
    detections_field = detections_field or f"{label_field}_detections"
    if classes is None:
        classes = dataset_classes(dataset, tags_field) or dataset_classes(dataset) or list(VOC_CLASSES)
    classes = list(classes)
    if not dataset.has_field(tags_field):
        raise SeplError(f"dataset '{dataset.name}' has no field '{tags_field}'",
                        hint="pick the Classifications field holding the image-level labels")
    params = dict(config.run_params(), tags_field=tags_field, classes=classes)
    run = runs.start_run(dataset, label_field, METHOD, params, overwrite=overwrite,
                         extra_fields=[detections_field], view=view, shared=False)
    resumed, todo = run.resumed, run.pending
    total = len(todo)
    summary = dict(samples=0, resumed=resumed, counts={}, warnings=[], failed=[], label_field=label_field,
                   detections_field=detections_field)
    if total == 0:
        set_mask_targets(dataset, label_field, dict(enumerate(classes)))
        return summary
    if pipeline is None:
        pipeline = config.build(classes, device=device)
    run.commit()  # the model is built: from here on the fields change
    counts: List[Dict[str, int]] = []
    from ._fill import BulkWriter, prefetched_batches

    # only the tags field is read; the next batch's images decode while the model runs, and
    # each batch is stored with one bulk write
    writer = BulkWriter(dataset)
    done = 0
    for batch, images in prefetched_batches(todo, todo.values("id"), batch_size, [tags_field], _load):
        _process(batch, images, pipeline, tags_field, label_field, detections_field, classes, writer, counts,
                 summary)
        done += len(batch)
        if progress:
            progress(done / total, f"{done}/{total} images")
    set_mask_targets(dataset, label_field, dict(enumerate(classes)))
    summary["counts"] = sum_counts(counts)
    c = summary["counts"]
    if c.get("empty_tags") or c.get("no_instance"):
        logger.warning("sam3: %d images without image-level labels and %d without any kept instance were "
                       "labelled all background", c.get("empty_tags", 0), c.get("no_instance", 0))
    for line in summary["failed"]:
        logger.error("sam3: %s", line)
    return summary


def _load(sample):
    from ..labelio import read_image

    try:
        return read_image(sample.filepath)
    except SeplError as e:
        raise SeplError(e.message, hint=e.hint or "fix or remove the image", sample=sample_name(sample))
    except Exception as e:
        raise SeplError(f"cannot read image: {e}", hint="fix or remove the image", sample=sample_name(sample))


def _process(batch, images, pipeline, tags_field, label_field, detections_field, classes, writer, counts, summary):
    ok, tags = [], []
    for s, image in zip(batch, images):  # a sample that cannot be read or has bad tags is reported
        try:
            if isinstance(image, SeplError):
                raise image
            tags.append(image_labels(s, tags_field))
            ok.append((s, image))
        except SeplError as e:
            summary["failed"].append(str(e if e.sample else SeplError(e.message, e.hint, sample_name(s))))
    if not ok:
        return
    names = [sample_name(s) for s, _ in ok]
    try:
        results = pipeline.predict_batch([im for _, im in ok], tags, names)
    except SeplError:
        if len(ok) == 1:
            raise
        results = []  # find the culprit one at a time
        for (s, im), t, n in zip(ok, tags, names):
            try:
                results.append(pipeline.predict_batch([im], [t], [n])[0])
            except SeplError as e:
                summary["failed"].append(str(e))
                results.append(None)
    updates, stored = {}, {}
    for (sample, _), name, result in zip(ok, names, results):
        if result is None:
            continue
        labels = result_to_labels(result, classes)
        updates[sample.id] = {label_field: labels["labels"], detections_field: labels["detections"]}
        stored[sample.id] = name
        counts.append(result.counts)
        summary["warnings"].extend((name, w) for w in result.warnings)
    failed = writer.write(updates, stored)
    summary["failed"].extend(f"{n}: {msg}" for n, msg in failed)
    summary["samples"] += len(updates) - len(failed)


class Sam3PseudoLabelModel(ImageModel, fom.SamplesMixin):
    """SAM 3 pseudo-labels as a FiftyOne model: ``dataset.apply_model(model, label_field="sam3")``.

    Each prediction is ``{"labels": fo.Segmentation, "detections": fo.Detections}``, stored by
    ``apply_model`` as ``<label_field>_labels`` and ``<label_field>_detections``. Image-level
    labels come from the sample field ``tags_field`` (or ``apply_model(..., tags_field=...)``).
    """

    def __init__(self, pipeline: Sam3PseudoLabels, tags_field: str = "image_labels"):
        fom.SamplesMixin.__init__(self)
        self.pipeline = pipeline
        self.tags_field = tags_field
        self.needs_fields = {"tags_field": tags_field}

    @property
    def needs_fields(self):
        return self._fields

    @needs_fields.setter
    def needs_fields(self, fields):
        # apply_model sets its kwargs here ({} by default) and loads only those fields
        self._fields = dict(fields) if fields else {"tags_field": self.tags_field}

    def _tags(self, sample):
        if sample is None:
            return []
        return image_labels(sample, (self.needs_fields or {}).get("tags_field") or self.tags_field)

    def predict(self, arg, sample=None):
        return self.predict_all([arg], [sample])[0]

    def predict_all(self, args, samples=None):
        samples = list(samples) if samples is not None else [None] * len(args)
        names = [sample_name(s) if s is not None else None for s in samples]
        results = self.pipeline.predict_batch([np.asarray(a) for a in args], [self._tags(s) for s in samples], names)
        return [result_to_labels(r, self.pipeline.class_names) for r in results]
