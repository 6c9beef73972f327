"""Getting data into FiftyOne: datasets with ground truth, seeds, CAMs and SAM masks.

Dataset importers (``import_voc``, ``import_coco``, ``import_folder``) create or extend a
dataset: samples already present (same filepath) are skipped, so an interrupted import
resumes. Field importers (``import_seeds``, ``import_cams``, ``import_masks``) fill one
field of an existing view, matching files to samples by the image's file stem; they are
recorded as sepl runs (``sepl.fo.runs``), never overwrite a field unless asked, and name
every sample whose file is missing or wrong while storing the others.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

import fiftyone as fo

from ..classes import COCO_CLASSES, VOC_CLASSES
from ..errors import SeplError
from ..labelio import find_file, read_label
from . import runs
from ..labels.cams import cam_to_label  # noqa: F401  (re-exported: it lived here)
from ..labels.imports import CamFiles, MaskFiles, SeedFiles
from ..labels.tags import read_tags_csv  # noqa: F401  (re-exported: it lived here)
from ._fill import Progress, disk_dir, fill_rows, make_segmentation, raise_failures, storage_choice
from .convert import (
    get_mask_targets,
    set_mask_targets,
    to_classifications,
)

_BATCH = 256
log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# datasets


def open_dataset(name: Optional[str] = None, dataset=None, persistent: bool = True):
    """``dataset`` itself, else the dataset called ``name`` (created when absent)."""
    if dataset is not None:
        return dataset
    if name is None:
        return fo.Dataset()
    if fo.dataset_exists(name):
        return fo.load_dataset(name)
    ds = fo.Dataset(name)
    ds.persistent = persistent
    return ds


def _class_names(label: np.ndarray, classes: Sequence[str]) -> List[str]:
    present = [int(c) for c in np.unique(label) if 0 < c < len(classes)]
    return [classes[c] for c in present]


def _add_in_batches(dataset, samples: Iterable, progress: Progress, total: int, what: str) -> int:
    batch, n = [], 0
    for s in samples:
        batch.append(s)
        if len(batch) >= _BATCH:
            dataset.add_samples(batch, progress=False)
            n += len(batch)
            batch = []
            if progress:
                progress(n / max(total, 1), f"{what}: {n}/{total}")
    if batch:
        dataset.add_samples(batch, progress=False)
        n += len(batch)
    if progress:
        progress(1.0, f"{what}: {n}/{total}")
    return n


def _existing_filepaths(dataset) -> set:
    return set(dataset.values("filepath")) if len(dataset) else set()


def import_voc(
    root: str,
    name: Optional[str] = None,
    dataset=None,
    split: str = "train",
    ids_file: Optional[str] = None,
    image_dir: str = "JPEGImages",
    label_dir: str = "SegmentationClass",
    gt_field: str = "ground_truth",
    labels_field: str = "image_labels",
    classes: Sequence[str] = VOC_CLASSES,
    storage: Optional[str] = None,
    mask_dir: Optional[str] = None,
    progress: Progress = None,
):
    """Import a PASCAL VOC 2012 segmentation layout.

    Each id of ``ImageSets/Segmentation/<split>.txt`` (or ``ids_file``) becomes a sample
    ``<root>/<image_dir>/<id>.jpg`` with ``gt_field`` (``fo.Segmentation``, uint8, 255
    ignore) read from ``<root>/<label_dir>/<id>.png`` (palette or greyscale),
    ``labels_field`` (``fo.Classifications`` of the classes present in the GT) and
    metadata width/height from the label map. Image files may be absent (the shared VOC
    train labels ship 5 images for 1464 ids): such samples still carry their labels.

    Returns the dataset; samples already in it are skipped.
    """
    root = Path(root)
    ids_path = Path(ids_file) if ids_file else root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not ids_path.exists():
        raise SeplError(f"id list not found: {ids_path}", hint="pass the split's list with --ids-file")
    ids = [i for i in ids_path.read_text().split() if i]
    if not (root / label_dir).is_dir():
        raise SeplError(f"label folder not found: {root / label_dir}", hint="pass --label-dir")
    storage = storage_choice(storage)
    ds = open_dataset(name, dataset)
    have = _existing_filepaths(ds)
    missing = []

    def samples():
        for sid in ids:
            img = find_file(root / image_dir, sid, (".jpg", ".jpeg", ".png")) or root / image_dir / f"{sid}.jpg"
            if str(img) in have:
                continue
            lbl_path = root / label_dir / f"{sid}.png"
            if not lbl_path.exists():
                missing.append(sid)
                continue
            label = read_label(lbl_path)
            h, w = label.shape
            yield fo.Sample(
                filepath=str(img),
                metadata=fo.ImageMetadata(width=w, height=h),
                **{
                    gt_field: make_segmentation(label, ds, gt_field, sid, storage, mask_dir),
                    labels_field: to_classifications(_class_names(label, classes)),
                },
            )

    _add_in_batches(ds, samples(), progress, len(ids), "VOC")
    _set_gt_targets(ds, gt_field, classes)
    if missing:
        raise SeplError(f"{len(missing)} id(s) of {ids_path.name} have no label PNG in {root / label_dir}: "
                        f"{', '.join(missing[:5])}", hint="the other samples were imported; fix the list or the folder")
    return ds


def coco_label_map(coco, image_id: int, cat_index: Dict[int, int]) -> np.ndarray:
    """(H, W) uint8 semantic label of a COCO image: 0 background, ``cat_index[cat_id]`` per
    instance (larger instances painted first so smaller ones stay visible), crowd regions
    255 where no instance lies (``sepl.labels.coco.paint_instances``)."""
    from ..labels.coco import paint_instances

    info = coco.imgs[image_id]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
    none = np.zeros((0, 0), bool)
    instances = [(coco.annToMask(a).astype(bool) if a["category_id"] in cat_index else none,
                  cat_index.get(a["category_id"]), a.get("area", 0), bool(a.get("iscrowd", 0))) for a in anns]
    return paint_instances((info["height"], info["width"]), instances)


def import_coco(
    images_dir: str,
    annotations: str,
    name: Optional[str] = None,
    dataset=None,
    gt_field: str = "ground_truth",
    labels_field: str = "image_labels",
    max_samples: Optional[int] = None,
    storage: Optional[str] = None,
    mask_dir: Optional[str] = None,
    progress: Progress = None,
):
    """Import a COCO 2014/2017 instances JSON as semantic ground truth.

    Categories are indexed 1..K in category-id order (the 80 COCO categories map to
    ``sepl.classes.COCO_CLASSES``), 0 is background: 81 mask targets for COCO. Image-level
    labels are the non-crowd categories present.
    """
    from pycocotools.coco import COCO

    if not Path(annotations).exists():
        raise SeplError(f"annotations file not found: {annotations}")
    try:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints timings
            coco = COCO(str(annotations))
    except Exception as e:
        raise SeplError(f"cannot read COCO annotations {annotations}: {e}", hint="pass an instances_*.json file")
    cats = sorted(coco.cats.values(), key=lambda c: c["id"])
    cat_index = {c["id"]: i + 1 for i, c in enumerate(cats)}
    classes = ["background"] + [c["name"] for c in cats]
    if len(cats) == 80 and [c["name"] for c in cats] != COCO_CLASSES:
        # other spellings of the same 80 categories: keep the file's names, they are what users see
        pass
    storage = storage_choice(storage)
    ds = open_dataset(name, dataset)
    have = _existing_filepaths(ds)
    image_ids = sorted(coco.imgs)[:max_samples] if max_samples else sorted(coco.imgs)

    def samples():
        for iid in image_ids:
            info = coco.imgs[iid]
            path = str(Path(images_dir) / info["file_name"])
            if path in have:
                continue
            label = coco_label_map(coco, iid, cat_index)
            stem = Path(info["file_name"]).stem
            yield fo.Sample(
                filepath=path,
                metadata=fo.ImageMetadata(width=info["width"], height=info["height"]),
                coco_id=iid,
                **{
                    gt_field: make_segmentation(label, ds, gt_field, stem, storage, mask_dir),
                    labels_field: to_classifications(_class_names(label, classes)),
                },
            )

    _add_in_batches(ds, samples(), progress, len(image_ids), "COCO")
    _set_gt_targets(ds, gt_field, classes)
    return ds


def _set_gt_targets(ds, gt_field: str, classes: Sequence[str]) -> None:
    """Mask targets of the GT field, and the dataset default when it has none yet."""
    set_mask_targets(ds, gt_field, dict(enumerate(classes)))
    if not ds.default_mask_targets:
        ds.default_mask_targets = dict(enumerate(classes))
        ds.save()


_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _folder_classes(tags: Dict[str, List[str]], name: Optional[str], dataset) -> List[str]:
    """The class order of a folder import without ``classes`` (see ``import_folder``)."""
    ds = dataset if dataset is not None else (fo.load_dataset(name) if name and fo.dataset_exists(name) else None)
    if ds is not None and ds.default_mask_targets:
        targets = ds.default_mask_targets
        return [targets[k] for k in sorted(targets, key=int)]
    found = {t for ts in tags.values() for t in ts}
    coco = ["background"] + list(COCO_CLASSES)
    for known in (VOC_CLASSES, coco):
        if found <= set(known[1:]):
            return list(known)
    raise SeplError(f"no class order for the tags {sorted(found)[:8]}{' ...' if len(found) > 8 else ''}: "
                    "they are not all VOC or COCO classes", hint="pass --classes background,<class 1>,... in the "
                    "index order of your seeds/labels; nothing was imported")


def import_folder(
    images_dir: str,
    tags_csv: Optional[str] = None,
    name: Optional[str] = None,
    dataset=None,
    labels_field: str = "image_labels",
    classes: Optional[Sequence[str]] = None,
    progress: Progress = None,
):
    """Import a plain folder of images, with image-level tags from a CSV.

    ``classes`` (index 0 = background) fixes the class order and rejects unknown tags.
    Without it the order comes from the data: the dataset's mask targets when it has them,
    else VOC's or COCO's class list when every tag is one of its classes; otherwise a
    SeplError asks for it (an order guessed from the tags would misname seeds indexed
    otherwise). The class list becomes the dataset's default mask targets, which seeds and
    refined labels then use.
    """
    folder = Path(images_dir)
    if not folder.is_dir():
        raise SeplError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_EXT)
    tags = read_tags_csv(tags_csv) if tags_csv else {}
    if classes is None:
        classes = _folder_classes(tags, name, dataset)
    known = set(classes[1:])
    unknown = {k: [t for t in ts if t not in known] for k, ts in tags.items()}
    unknown = {k: v for k, v in unknown.items() if v}
    if unknown:
        first = list(unknown.items())[:5]
        raise SeplError(f"tags not in the class list: {first}",
                        hint="add them to --classes or fix the CSV; nothing was imported")
    ds = open_dataset(name, dataset)
    have = _existing_filepaths(ds)

    def samples():
        for p in files:
            if str(p) in have:
                continue
            kwargs = {}
            t = tags.get(p.name, tags.get(p.stem))
            if t is not None:
                kwargs[labels_field] = to_classifications(t)
            yield fo.Sample(filepath=str(p), **kwargs)

    _add_in_batches(ds, samples(), progress, len(files), "images")
    ds.compute_metadata(progress=False)
    if not ds.default_mask_targets:
        ds.default_mask_targets = dict(enumerate(classes))
        ds.save()
    untagged = [p.name for p in files if tags and p.name not in tags and p.stem not in tags]
    if tags_csv and untagged:
        raise SeplError(f"{len(untagged)} image(s) have no row in {tags_csv}: {', '.join(untagged[:5])}",
                        hint="they were imported without image-level labels; add rows and rerun")
    return ds


# ---------------------------------------------------------------------------------------
# fields of existing samples


def _targets_for(view, field: str, classes: Optional[Sequence[str]]) -> Dict[int, str]:
    ds = view._dataset
    if classes is not None:
        return dict(enumerate(classes))
    targets = get_mask_targets(ds, field)
    if targets:
        return targets
    for f in ds.get_field_schema(embedded_doc_type=fo.Segmentation):
        t = get_mask_targets(ds, f)
        if t:
            return t
    raise SeplError(f"no class names known for '{field}'",
                    hint="pass classes (--classes), or import a dataset with ground truth first")


def _begin(view, field, method, params, overwrite) -> "runs.Run":
    return runs.start_run(view._dataset, field, method, params, overwrite=overwrite, view=view)


@runs.recorded
def import_seeds(
    view,
    folder: str,
    field: str = "seeds",
    classes: Optional[Sequence[str]] = None,
    storage: Optional[str] = None,
    mask_dir: Optional[str] = None,
    overwrite: bool = False,
    progress: Progress = None,
    num_workers: Optional[int] = None,
) -> int:
    """Fill ``field`` with the PNG label maps ``<folder>/<image stem>.png`` (0 background,
    1..C-1 classes, 255 ignore) of an external WSSS method, decoded on ``num_workers``
    processes (default: all cores).

    Returns the number of samples written. Samples without a file, with a file of another
    size than the image, or with classes outside the mask targets are named in one
    SeplError raised after the others were stored.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SeplError(f"seed folder not found: {folder}")
    targets = _targets_for(view, field, classes)
    run = _begin(view, field, "import_seeds", {"folder": str(folder.resolve())}, overwrite)
    ds = view._dataset
    job = SeedFiles(str(folder), field, len(targets), disk_dir(ds, field, storage, mask_dir))
    done, failures = fill_rows(run.pending, [], job, progress, what="seeds", num_workers=num_workers,
                               mask_dir=mask_dir, claim=run.claim)
    set_mask_targets(ds, field, targets)
    raise_failures(failures, field, done)
    return done


@runs.recorded
def import_cams(
    view,
    folder: str,
    field: str = "seeds",
    bg_threshold: Optional[float] = None,
    bg_power: Optional[float] = None,
    classes: Optional[Sequence[str]] = None,
    storage: Optional[str] = None,
    mask_dir: Optional[str] = None,
    overwrite: bool = False,
    progress: Progress = None,
    num_workers: Optional[int] = None,
) -> int:
    """Fill ``field`` with label maps made from ``<folder>/<image stem>.npy`` CAM dicts
    (see ``cam_to_label``), on ``num_workers`` processes. Returns the number of samples
    written."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SeplError(f"CAM folder not found: {folder}")
    if (bg_threshold is None) == (bg_power is None):
        raise SeplError("give either a background threshold or a background power",
                        hint="e.g. --bg-threshold 0.26 (IRN/AMN) or --bg-power 3")
    runs.check_fraction("bg_threshold", bg_threshold)
    targets = _targets_for(view, field, classes)
    params = {"folder": str(folder.resolve()), "bg_threshold": bg_threshold, "bg_power": bg_power}
    run = _begin(view, field, "import_cams", params, overwrite)
    ds = view._dataset
    job = CamFiles(str(folder), field, len(targets), bg_threshold, bg_power, disk_dir(ds, field, storage, mask_dir))
    done, failures = fill_rows(run.pending, [], job, progress, what="CAMs", num_workers=num_workers,
                               mask_dir=mask_dir, claim=run.claim)
    set_mask_targets(ds, field, targets)
    raise_failures(failures, field, done)
    return done


def _warn_empty(view, field: str) -> None:
    """Say which imported samples hold an empty mask set (stored, but refining them needs allow_empty)."""
    from fiftyone import ViewField as F

    empty = view.match(F(f"{field}.detections").length() == 0)
    n = len(empty)
    if n:
        names = [os.path.basename(p) for p in empty.limit(5).values("filepath")]
        log.warning("%d sample(s) have an empty mask set, stored as empty Detections in '%s': %s. "
                    "`sepl refine` keeps their seed only with --allow-empty", n, field,
                    ", ".join(names) + (" ..." if n > 5 else ""))


@runs.recorded
def import_masks(
    view,
    folder: str,
    field: str = "sam_masks",
    overwrite: bool = False,
    progress: Progress = None,
    num_workers: Optional[int] = None,
) -> int:
    """Fill ``field`` (``fo.Detections`` with instance masks) with class-agnostic masks
    computed elsewhere: ``<folder>/<image stem>/`` in segment-anything's ``amg.py`` layout
    (one PNG per mask + ``metadata.csv``) or ``<folder>/<image stem>.json`` (COCO RLE),
    decoded on ``num_workers`` processes. ``confidence`` is the predicted IoU when the
    metadata has it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SeplError(f"mask folder not found: {folder}")
    run = _begin(view, field, "import_masks", {"folder": str(folder.resolve())}, overwrite)
    done, failures = fill_rows(run.pending, [], MaskFiles(str(folder), field), progress, what="masks",
                               num_workers=num_workers, claim=run.claim)
    _warn_empty(view, field)
    raise_failures(failures, field, done)
    return done


__all__ = [
    "open_dataset", "import_voc", "import_coco", "import_folder", "read_tags_csv", "coco_label_map",
    "import_seeds", "cam_to_label", "import_cams", "import_masks",
]
