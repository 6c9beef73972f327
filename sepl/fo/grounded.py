"""Grounded-SAM pseudo-labels on FiftyOne samples.

Per sample: the image-level labels in ``tags_field`` (``fo.Classifications``) prompt the
detector; the label map goes to ``label_field`` (``fo.Segmentation``, mask targets set) and
the boxes' SAM masks to ``detections_field`` (``fo.Detections``: class label, detector score
as ``confidence``, ``phrase``, ``sam_score``, ``detector_box``), so the App shows what the
detector saw. Labels in ``label_field`` are SEPL-ready seeds (``sepl.merge`` takes them).
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

import fiftyone as fo
import fiftyone.core.models as fom

from ._models import LoaderModel
from ..classes import VOC_CLASSES
from ..errors import SeplError
from ..grounded.pipeline import GroundedConfig, GroundedResult, GroundedSAM, sum_counts
from . import runs
from .convert import image_labels, masks_to_detections, sample_name, set_mask_targets, to_segmentation

logger = logging.getLogger(__name__)

METHOD = "grounded_sam"


def dataset_classes(dataset, field: Optional[str] = None) -> Optional[List[str]]:
    """Class names indexed from 0 from the mask targets of ``field`` or the dataset default."""
    targets = (dataset.mask_targets.get(field) if field else None) or dataset.default_mask_targets
    if not targets:
        return None
    targets = {int(k): v for k, v in targets.items()}
    n = max(targets) + 1
    if sorted(targets) != list(range(n)):
        return None
    return [targets[i] for i in range(n)]


def result_to_labels(result: GroundedResult, class_names: Sequence[str]) -> Dict[str, fo.Label]:
    """``{"labels": fo.Segmentation, "detections": fo.Detections}`` for one pipeline result."""
    det = result.detections
    h, w = result.label.shape
    boxes = det.boxes / np.array([w, h, w, h], np.float32) if len(det) else det.boxes
    dets = masks_to_detections(
        result.masks, label="object", scores=det.scores,
        attributes=dict(phrase=list(det.phrases), sam_score=result.mask_scores.tolist(),
                        detector_box=[[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]
                                      for b in boxes]))
    for d, c in zip(dets.detections, det.class_ids):
        d.label = str(class_names[int(c)])
    return dict(labels=to_segmentation(result.label), detections=dets)


@runs.recorded
def grounded_pseudo_labels(
    view,
    tags_field: str,
    label_field: str = "grounded",
    detections_field: Optional[str] = None,
    config: Optional[GroundedConfig] = None,
    classes: Optional[Sequence[str]] = None,
    pipeline: Optional[GroundedSAM] = None,
    device: str = "auto",
    batch_size: int = 4,
    overwrite: bool = False,
    progress: Optional[Callable[[float, str], None]] = None,
) -> dict:
    """Grounded-SAM pseudo-labels for the samples of ``view``; resumes an identical earlier run.

    Args:
        view: a dataset or view.
        tags_field: image-level labels (``fo.Classifications``) of each sample.
        label_field: output ``fo.Segmentation`` field.
        detections_field: output ``fo.Detections`` (default ``<label_field>_detections``).
        config: the run's ``GroundedConfig`` (recorded; a rerun with the same one resumes).
        classes: class names from index 0 (default: the dataset's mask targets, else VOC).
        pipeline: an already built pipeline for ``config`` (skips building; tests, notebooks).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        batch_size: images per detector / SAM batch.
        overwrite: replace existing output fields made otherwise.
        progress: ``callback(fraction, label)``.

    Returns:
        ``{"samples": processed, "resumed": bool, "counts": {...}, "warnings": [(sample, msg)]}``;
        ``counts`` adds ``empty_tags`` and ``no_detection`` (images left all background) and
        every dropped box by reason.
    """
    config = config or GroundedConfig()
    dataset = view._dataset
    runs.check_positive("batch size", batch_size)
    runs.check_fraction("box_threshold", config.box_threshold)
    runs.check_fraction("text_threshold", config.text_threshold)
    if pipeline is None:
        for name in ("checkpoint", "sam_checkpoint"):
            runs.check_file(f"Grounded-SAM {name}", getattr(config, name, None))
    detections_field = detections_field or f"{label_field}_detections"
    if classes is None:
        classes = dataset_classes(dataset, tags_field) or dataset_classes(dataset) or list(VOC_CLASSES)
    classes = list(classes)
    params = dict(config.run_params(), tags_field=tags_field, classes=classes)
    run = runs.start_run(dataset, label_field, METHOD, params, overwrite=overwrite,
                         extra_fields=[detections_field], view=view, shared=False)
    resumed, todo = run.resumed, run.pending
    total = len(todo)
    summary = dict(samples=0, resumed=resumed, counts={}, warnings=[], label_field=label_field,
                   detections_field=detections_field)
    if total == 0:
        set_mask_targets(dataset, label_field, dict(enumerate(classes)))
        return summary
    if pipeline is None:
        pipeline = config.build(classes, device=device)
    run.commit()  # the pipeline is built: from here on the field changes
    counts: List[Dict[str, int]] = []
    from ..labelio import read_image
    from ._fill import BulkWriter, prefetched_batches

    # only the tags field is read; the next batch's images decode while the model runs, and
    # each batch is stored with one bulk write
    writer = BulkWriter(dataset)
    for batch, images in prefetched_batches(todo, todo.values("id"), batch_size, [tags_field],
                                            lambda s: read_image(s.filepath)):
        for image in images:
            if isinstance(image, SeplError):
                raise image
        _process(batch, images, pipeline, tags_field, label_field, detections_field, classes, writer, counts,
                 summary)
        if progress:
            progress(summary["samples"] / total, f"{summary['samples']}/{total} images")
    set_mask_targets(dataset, label_field, dict(enumerate(classes)))
    summary["counts"] = sum_counts(counts)
    if progress:
        progress(1.0, f"{summary['samples']}/{total} images")
    c = summary["counts"]
    if c.get("empty_tags") or c.get("no_detection"):
        logger.warning("grounded: %d images without image-level labels and %d without any kept box were "
                       "labelled all background", c.get("empty_tags", 0), c.get("no_detection", 0))
    dropped = c.get("unmatched_phrase", 0) + c.get("below_text_threshold", 0)
    if dropped:
        logger.warning("grounded: %d boxes above the box threshold were dropped (%d unmatched phrase, %d below "
                       "the text threshold)", dropped, c.get("unmatched_phrase", 0), c.get("below_text_threshold", 0))
    return summary


def _process(batch, images, pipeline, tags_field, label_field, detections_field, classes, writer, counts, summary):
    names = [sample_name(s) for s in batch]
    tags = [image_labels(s, tags_field) for s in batch]
    updates = {}
    for sample, name, result in zip(batch, names, pipeline.predict_batch(images, tags, names)):
        labels = result_to_labels(result, classes)
        updates[sample.id] = {label_field: labels["labels"], detections_field: labels["detections"]}
        counts.append(result.counts)
        summary["warnings"].extend((name, w) for w in result.warnings)
    failed = writer.write(updates, dict(zip([s.id for s in batch], names)))
    if failed:
        raise SeplError(f"{len(failed)} sample(s) could not be stored: {failed[:5]}",
                        hint="the others were stored; rerun to resume")
    summary["samples"] += len(updates)


class GroundedSAMModel(LoaderModel, fom.SamplesMixin):
    """Grounded-SAM as a FiftyOne model, for ``dataset.apply_model(model, label_field="grounded")``.

    Each prediction is ``{"labels": fo.Segmentation, "detections": fo.Detections}``, stored by
    ``apply_model`` as ``<label_field>_labels`` and ``<label_field>_detections``. The image-level
    labels are read from the sample field ``tags_field``, or from the one named in
    ``apply_model(..., tags_field="...")`` (apply_model resets ``needs_fields`` to its kwargs).

    Args:
        pipeline: a ``GroundedSAM`` (e.g. ``GroundedConfig(...).build(classes)``).
        tags_field: the samples' ``fo.Classifications`` of image-level labels.
    """

    output_keys = ("labels", "detections")

    def __init__(self, pipeline: GroundedSAM, tags_field: str = "image_labels"):
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

    def run_params(self):
        return {"classes": list(self.pipeline.class_names),
                "tags_field": (self.needs_fields or {}).get("tags_field") or self.tags_field}

    def on_done(self, dataset, label_field):
        set_mask_targets(dataset, f"{label_field}_labels", dict(enumerate(self.pipeline.class_names)))

    def _tags(self, sample):
        if sample is None:
            return []
        return image_labels(sample, (self.needs_fields or {}).get("tags_field") or self.tags_field)

    def predict(self, arg, sample=None):
        return self.predict_all([arg], [sample])[0]

    def predict_all(self, args, samples=None):
        samples = list(samples) if samples is not None else [None] * len(args)
        images = [np.asarray(a) for a in args]
        names = [sample_name(s) if s is not None else None for s in samples]
        results = self.pipeline.predict_batch(images, [self._tags(s) for s in samples], names)
        return [result_to_labels(r, self.pipeline.class_names) for r in results]
