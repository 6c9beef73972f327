"""CAM seeds on FiftyOne samples: train a CAM network from an image-level labels field and
write seeds as ``fo.Segmentation`` (optionally the CAM as ``fo.Heatmap``).

    model = train_cam(view, "labels", output_dir="runs/cam", arch="tiny", epochs=40)
    generate_seeds(view, model, "cam_seeds", labels_field="labels", heatmap_field="cam")

Behaviour on awkward input (documented, tested):
- a sample whose labels field is missing/None: SeplError naming the sample;
- a sample with an *empty* label list: a negative example in training (every class absent),
  an all-background seed in generation (counted in the returned summary);
- a label that is not one of the classes (mask targets / the model's classes): SeplError
  naming the sample and the known classes;
- a checkpoint of another architecture or class list: SeplError on resume / load.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

import fiftyone as fo

from ..errors import SeplError
from .convert import get_mask_targets, image_labels, mask_dir_for, set_mask_targets, to_segmentation
from ._fill import fill_field, raise_failures
from . import runs
from .runs import start_run

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]


def _label_values(view, field: str) -> List[Optional[List[str]]]:
    """Per sample, the list of label names (None where the field is unset)."""
    ftype = view.get_field(field)
    if ftype is None:
        raise SeplError(f"the dataset has no field '{field}'",
                        hint="pick the field holding image-level labels (fo.Classifications)")
    doc = getattr(ftype, "document_type", None)
    if doc is fo.Classifications:
        return view.values(f"{field}.classifications.label")
    if doc is fo.Classification:
        return [None if v is None else [v] for v in view.values(f"{field}.label")]
    return [image_labels(s, field) if s[field] is not None else None for s in view.select_fields(field)]


def resolve_classes(view, labels_field: str, classes: Optional[Sequence[str]] = None,
                    mask_targets_field: Optional[str] = None) -> List[str]:
    """Class names, "background" first: ``classes`` if given (background prepended when
    missing), else the mask targets of ``mask_targets_field`` / the dataset default, else
    the sorted union of the labels found in ``view``."""
    if classes:
        names = list(classes)
        return names if names[0] == "background" else ["background"] + names
    ds = view._dataset
    targets = get_mask_targets(ds, mask_targets_field) if mask_targets_field else (
        {int(k): v for k, v in (ds.default_mask_targets or {}).items()})
    if targets:
        n = max(targets) + 1
        if sorted(targets) != list(range(n)):
            raise SeplError(f"mask targets {targets} are not the consecutive indices 0..{n - 1}",
                            hint="pass the class names explicitly (classes=[...], --classes)")
        return [targets[i] for i in range(n)]
    found = sorted({n for v in _label_values(view, labels_field) if v for n in v})
    if not found:
        raise SeplError(f"no sample of the view has labels in '{labels_field}'",
                        hint="fill the image-level labels field first")
    return ["background"] + [n for n in found if n != "background"]


def _multi_hot(view, labels_field: str, class_names: Sequence[str]) -> Tuple[np.ndarray, int]:
    index = {n: i for i, n in enumerate(class_names)}
    values = _label_values(view, labels_field)
    ids, paths = view.values("id"), view.values("filepath")
    y = np.zeros((len(values), len(class_names) - 1), np.float32)
    empty = 0
    for k, names in enumerate(values):
        where = f"{os.path.basename(paths[k])} ({ids[k]})"
        if names is None:
            raise SeplError(f"field '{labels_field}' holds no image-level labels", sample=where,
                            hint=f"set '{labels_field}' for this sample, or exclude it from the view")
        if not names:
            empty += 1
        for n in names:
            if n == "background":
                continue
            if n not in index:
                raise SeplError(f"label '{n}' is not one of the classes {list(class_names[1:])}", sample=where,
                                hint="add it to the mask targets / classes, or fix the label")
            y[k, index[n] - 1] = 1
    return y, empty


def default_output_dir(dataset, name: str = "cam_model") -> Path:
    """``<fiftyone dataset dir>/sepl/<dataset>/<name>`` (or under ``$SEPL_MASK_DIR``)."""
    return mask_dir_for(dataset, name)


def train_cam(
    view,
    labels_field: str,
    output_dir: Optional[Union[str, Path]] = None,
    classes: Optional[Sequence[str]] = None,
    mask_targets_field: Optional[str] = None,
    config=None,
    resume: bool = True,
    progress: Union[bool, ProgressFn] = True,
    **overrides: Any,
):
    """Train a CAM network on ``view``'s images and image-level labels.

    Args:
        view: a dataset or view; every sample needs ``labels_field`` set (an empty list is
            a negative example).
        labels_field: ``fo.Classifications`` (or ``fo.Classification`` / list of strings).
        output_dir: where ``checkpoint.pth`` and ``loss_curve.png`` are written; default
            ``default_output_dir(dataset)``. An existing checkpoint there is resumed.
        classes / mask_targets_field: see ``resolve_classes``.
        config: a ``sepl.cam.train.TrainConfig`` or a preset name ("hfpl-voc", the default;
            "cpu-tiny" for CPU runs on small images); keyword ``overrides`` replace its fields
            (e.g. ``epochs=20, feature_similarity=False``).
    Returns:
        the trained ``CAMNet`` (eval mode, CPU); ``model.history`` holds the loss terms.
    """
    from ..cam.train import TrainConfig, get_config, train

    cfg = get_config(config)
    if overrides:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            raise SeplError(f"unknown training options {sorted(unknown)}",
                            hint=f"valid: {[f.name for f in dataclasses.fields(TrainConfig)]}")
        cfg = dataclasses.replace(cfg, **overrides)
    if len(view) == 0:
        raise SeplError("the view is empty", hint="pick a view with samples")
    class_names = resolve_classes(view, labels_field, classes, mask_targets_field)
    labels, empty = _multi_hot(view, labels_field, class_names)
    if empty:
        logger.warning("%d of %d samples have no labels: they train as negatives", empty, len(labels))
    out = Path(output_dir) if output_dir is not None else default_output_dir(view._dataset)
    model, history = train(view.values("filepath"), labels, class_names, cfg, out, resume, progress)
    model.history = history
    model.checkpoint_path = str(out / "checkpoint.pth")
    return model


def _as_source(model):
    """A CAM source and its class names from a CAMNet, a GradCAM or a checkpoint path."""
    if isinstance(model, (str, os.PathLike)):
        from ..cam.train import load_cam_model

        model = load_cam_model(model)
    names = getattr(model, "class_names", None)
    if not names:
        raise SeplError(f"{type(model).__name__} has no class_names",
                        hint="pass a CAMNet, a sepl.cam.gradcam.GradCAM or a checkpoint path")
    return model, list(names)


def _model_id(model) -> Dict[str, Any]:
    return dict(model_class=type(model).__name__, model_config=getattr(model, "config", {}),
                checkpoint=getattr(model, "checkpoint_path", None), classes=list(model.class_names))


@runs.recorded
def generate_seeds(
    view,
    model,
    out_field: str,
    labels_field: str,
    heatmap_field: Optional[str] = None,
    scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
    flip: bool = True,
    bg_mode: str = "threshold",
    threshold: float = 0.26,
    alpha: float = 8.0,
    mask_dir: Optional[str] = None,
    overwrite: bool = False,
    device: Optional[str] = None,
    progress: Union[bool, ProgressFn] = True,
) -> Dict[str, int]:
    """Write CAM seeds for the samples of ``view``.

    Args:
        model: a ``CAMNet``, a ``GradCAM`` or the path of a checkpoint from ``train_cam``.
        out_field: new ``fo.Segmentation`` field (0 background, class indices of the model's
            classes, which become its mask targets).
        labels_field: the image-level labels; only these classes compete per image.
        heatmap_field: optional ``fo.Heatmap`` field with the max labelled CAM in [0, 1].
        mask_dir: write seeds as PNGs under ``mask_dir/<dataset>/<out_field>`` instead of
            in the database (use it for large datasets).
        overwrite: replace existing fields; otherwise a rerun with the same settings resumes.
    Returns:
        {"written": n, "skipped": already done, "unlabelled": samples with empty labels}.
        Samples with labels the model does not know are named in a SeplError raised after
        the others were stored.
    """
    from ..cam.infer import seed_from_image
    from ..labelio import read_image

    source = model
    runs.check_choice("background mode", bg_mode, ("threshold", "power"))
    runs.check_fraction("threshold", threshold)
    if not scales or any(float(s) <= 0 for s in scales):
        raise SeplError(f"scales must be positive, got {list(scales)}", hint="e.g. scales 1.0 0.5 1.5 2.0")
    if isinstance(model, (str, os.PathLike)):
        runs.check_file("CAM checkpoint", model)
    model, class_names = _as_source(model)
    index = {n: i for i, n in enumerate(class_names)}
    ds = view._dataset
    params = dict(labels_field=labels_field, scales=[float(s) for s in scales], flip=bool(flip), bg_mode=bg_mode,
                  threshold=float(threshold), alpha=float(alpha), **_model_id(model))
    if params["checkpoint"] is None and isinstance(source, (str, os.PathLike)):
        params["checkpoint"] = os.path.abspath(source)  # the run records what made the seeds
    extra = [heatmap_field] if heatmap_field else []
    run = start_run(ds, out_field, "cam_seeds", params, overwrite=overwrite, extra_fields=extra, view=view)
    todo = run.pending
    folder = mask_dir_for(ds, out_field, mask_dir) if mask_dir else None
    set_mask_targets(ds, out_field, dict(enumerate(class_names)))
    if device is not None and hasattr(model, "to"):
        model.to(device)
    n_total = len(todo)
    unlabelled = 0

    def compute(sample, image):
        nonlocal unlabelled
        names = [n for n in image_labels(sample, labels_field) if n != "background"]
        unknown = [n for n in names if n not in index]
        if unknown:
            raise SeplError(f"labels {unknown} are not classes of the model {class_names[1:]}",
                            hint="fix the labels, or train a model on these classes")
        seed, heat = seed_from_image(model, image, [index[n] for n in names], scales, flip, bg_mode,
                                     threshold, alpha, device)
        unlabelled += not names
        path = str(folder / f"{sample.id}.png") if folder is not None else None
        out = {out_field: to_segmentation(seed, path)}
        if heatmap_field:
            out[heatmap_field] = fo.Heatmap(map=heat, range=[0, 1])
        return out

    # only the labels field is read; loader threads decode the chunk's images while the model
    # runs; each chunk is stored with one bulk write
    written, failures = fill_field(todo, out_field, compute, progress if callable(progress) else None,
                                   what="seeds", fields=[labels_field], load=lambda s: read_image(s.filepath),
                                   claim=run.claim)
    raise_failures(failures, out_field, written)
    return dict(written=written, skipped=len(view) - n_total, unlabelled=unlabelled)
