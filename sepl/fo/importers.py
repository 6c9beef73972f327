"""Getting data into FiftyOne: datasets with ground truth, seeds, CAMs and SAM masks.

Dataset importers (``import_voc``, ``import_coco``, ``import_folder``) create or extend a
dataset: samples already present (same filepath) are skipped, so an interrupted import
resumes. Field importers (``import_seeds``, ``import_cams``, ``import_masks``) fill one
field of an existing view, matching files to samples by the image's file stem; they are
recorded as sepl runs (``sepl.fo.runs``), never overwrite a field unless asked, and name
every sample whose file is missing or wrong while storing the others.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

import fiftyone as fo

from ..classes import COCO_CLASSES, IGNORE_INDEX, VOC_CLASSES
from ..errors import SeplError
from ..labelio import find_file, read_label
from ..safeload import load_npy
from . import runs
from ._fill import Progress, fill_field, make_segmentation, raise_failures, storage_choice
from .convert import (
    get_mask_targets,
    image_shape,
    masks_to_detections,
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
    255 where no instance lies."""
    info = coco.imgs[image_id]
    label = np.zeros((info["height"], info["width"]), np.uint8)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
    crowd = np.zeros_like(label, dtype=bool)
    for ann in sorted(anns, key=lambda a: -a.get("area", 0)):
        if ann["category_id"] not in cat_index:
            continue
        m = coco.annToMask(ann).astype(bool)
        if ann.get("iscrowd", 0):
            crowd |= m
        else:
            label[m] = cat_index[ann["category_id"]]
    label[crowd & (label == 0)] = IGNORE_INDEX
    return label


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


def read_tags_csv(path: str) -> Dict[str, List[str]]:
    """``{file name or stem: [tag, ...]}`` from a CSV with a header.

    The image column is the first of ``filename``/``filepath``/``image``/``id``; tags are
    one ``tags``/``labels`` column separated by ``;``, ``|``, ``,`` or spaces, or several
    rows per image (one tag each).
    """
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise SeplError(f"tags CSV not found: {path}")
    if not rows:
        return {}
    cols = {c.lower().strip(): c for c in rows[0].keys() if c}
    key = next((cols[c] for c in ("filename", "filepath", "image", "id") if c in cols), None)
    tag = next((cols[c] for c in ("tags", "labels", "tag", "label", "classes") if c in cols), None)
    if key is None or tag is None:
        raise SeplError(f"{path} has columns {list(rows[0])}",
                        hint="use a header with 'filename' and 'tags' columns (tags separated by ';')")
    out: Dict[str, List[str]] = {}
    for row in rows:
        text = (row[tag] or "").strip()
        sep = next((s for s in (";", "|", ",") if s in text), None)
        tags = [t.strip() for t in (text.split(sep) if sep else text.split()) if t.strip()]
        out.setdefault(os.path.basename(row[key].strip()), []).extend(t for t in tags)
    return {k: list(dict.fromkeys(v)) for k, v in out.items()}


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


def _check_values(label: np.ndarray, num_classes: int, what: str) -> None:
    bad = [int(v) for v in np.unique(label) if v >= num_classes and v != IGNORE_INDEX]
    if bad:
        raise SeplError(f"{what} holds class indices {bad[:10]} outside the {num_classes} mask targets",
                        hint="import with the right class list (--classes) or fix the file")


def _begin(view, field, method, params, overwrite):
    resume = runs.start_run(view._dataset, field, method, params, overwrite=overwrite)
    return runs.pending_view(view, field, resume)


def _stem(sample) -> str:
    return Path(sample.filepath).stem


def import_seeds(
    view,
    folder: str,
    field: str = "seeds",
    classes: Optional[Sequence[str]] = None,
    storage: Optional[str] = None,
    mask_dir: Optional[str] = None,
    overwrite: bool = False,
    progress: Progress = None,
) -> int:
    """Fill ``field`` with the PNG label maps ``<folder>/<image stem>.png`` (0 background,
    1..C-1 classes, 255 ignore) of an external WSSS method.

    Returns the number of samples written. Samples without a file, with a file of another
    size than the image, or with classes outside the mask targets are named in one
    SeplError raised after the others were stored.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SeplError(f"seed folder not found: {folder}")
    targets = _targets_for(view, field, classes)
    pending = _begin(view, field, "import_seeds", {"folder": str(folder.resolve())}, overwrite)
    ds = view._dataset

    def compute(sample):
        path = find_file(folder, _stem(sample), (".png",))
        if path is None:
            raise SeplError(f"no {_stem(sample)}.png in {folder}")
        label = read_label(path)
        h, w = image_shape(sample)
        if label.shape != (h, w):
            raise SeplError(f"{path.name} is {label.shape[1]}x{label.shape[0]} but the image is {w}x{h}",
                            hint="export the seeds at the image's size")
        _check_values(label, len(targets), path.name)
        return make_segmentation(label, ds, field, sample.id, storage, mask_dir)

    done, failures = fill_field(pending, field, compute, progress, what="seeds")
    set_mask_targets(ds, field, targets)
    raise_failures(failures, field, done)
    return done


def cam_to_label(
    cam_dict,
    shape: Optional[tuple] = None,
    bg_threshold: Optional[float] = None,
    bg_power: Optional[float] = None,
) -> np.ndarray:
    """Turn an IRN/AMN-style CAM dict into an (H, W) uint8 label map.

    ``cam_dict`` holds ``keys`` (0-based foreground class indices, i.e. class ``k+1``)
    and ``high_res`` (K, H, W) or ``cam`` (K, h, w, upsampled bilinearly to ``shape``),
    per-class normalised to [0, 1]; a SEAM-style ``{class index: (H, W)}`` dict is accepted
    too. Background is the constant ``bg_threshold`` (e.g. 0.26), or ``(1 - max cam) **
    bg_power``. Exactly one of the two must be given.
    """
    if (bg_threshold is None) == (bg_power is None):
        raise SeplError("give either a background threshold or a background power",
                        hint="e.g. --bg-threshold 0.26 (IRN/AMN) or --bg-power 3")
    if isinstance(cam_dict, np.ndarray) and cam_dict.dtype == object:
        cam_dict = cam_dict.item()
    if not isinstance(cam_dict, dict):
        raise SeplError(f"CAM file holds a {type(cam_dict).__name__}, not a dict",
                        hint="expected np.save(path, {'keys': ..., 'high_res': ...})")
    if "keys" in cam_dict:
        keys = np.asarray(cam_dict["keys"], dtype=np.int64)
        cams = cam_dict.get("high_res", cam_dict.get("cam"))
        if cams is None:
            raise SeplError("CAM dict has 'keys' but neither 'high_res' nor 'cam'")
        if hasattr(cams, "numpy"):
            cams = cams.detach().cpu().numpy() if hasattr(cams, "detach") else cams.numpy()
        cams = np.asarray(cams, dtype=np.float32)
    else:
        keys = np.asarray(sorted(int(k) for k in cam_dict), dtype=np.int64)
        cams = np.stack([np.asarray(cam_dict[k], np.float32) for k in sorted(cam_dict, key=int)]) \
            if len(keys) else np.zeros((0,) + tuple(shape or (1, 1)), np.float32)
    if cams.ndim != 3 or len(keys) != len(cams):
        raise SeplError(f"CAM array of shape {cams.shape} does not match {len(keys)} keys")
    if shape is not None and cams.shape[1:] != tuple(shape):
        if "high_res" in (cam_dict if isinstance(cam_dict, dict) else {}):
            raise SeplError(f"high_res CAMs are {cams.shape[2]}x{cams.shape[1]} but the image is "
                            f"{shape[1]}x{shape[0]}", hint="recompute the CAMs for this image")
        import cv2

        cams = np.stack([cv2.resize(c, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) for c in cams]) \
            if len(cams) else np.zeros((0,) + tuple(shape), np.float32)
    h, w = cams.shape[1:] if len(cams) else tuple(shape)
    from ..cam.seeds import background_score

    fg = cams if len(cams) else np.zeros((0, h, w), np.float32)
    bg = background_score(np.clip(fg, 0, 1), "threshold" if bg_threshold is not None else "power",
                          threshold=bg_threshold or 0.0, alpha=bg_power or 1.0)
    scores = np.concatenate([bg[None], cams], 0)
    classes = np.concatenate([[0], keys + 1])
    return classes[np.argmax(scores, 0)].astype(np.uint8)


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
) -> int:
    """Fill ``field`` with label maps made from ``<folder>/<image stem>.npy`` CAM dicts
    (see ``cam_to_label``). Returns the number of samples written."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SeplError(f"CAM folder not found: {folder}")
    if (bg_threshold is None) == (bg_power is None):
        raise SeplError("give either a background threshold or a background power",
                        hint="e.g. --bg-threshold 0.26 (IRN/AMN) or --bg-power 3")
    targets = _targets_for(view, field, classes)
    params = {"folder": str(folder.resolve()), "bg_threshold": bg_threshold, "bg_power": bg_power}
    pending = _begin(view, field, "import_cams", params, overwrite)
    ds = view._dataset

    def compute(sample):
        path = folder / f"{_stem(sample)}.npy"
        if not path.exists():
            raise SeplError(f"no {path.name} in {folder}")
        data = load_npy(path)  # pickled CAM dicts through a restricted unpickler: no code runs
        label = cam_to_label(data, image_shape(sample), bg_threshold, bg_power)
        _check_values(label, len(targets), path.name)
        return make_segmentation(label, ds, field, sample.id, storage, mask_dir)

    done, failures = fill_field(pending, field, compute, progress, what="CAMs")
    set_mask_targets(ds, field, targets)
    raise_failures(failures, field, done)
    return done


def _mask_scores(meta: List[dict]):
    """Per-mask score (``predicted_iou``) and numeric attributes from amg metadata rows."""
    scores, attrs = None, {}
    if not meta:
        return scores, attrs
    for name in ("predicted_iou", "stability_score", "area"):
        vals = [m.get(name) for m in meta]
        try:
            vals = [float(v) for v in vals]
        except (TypeError, ValueError):
            continue
        if name == "predicted_iou":
            scores = vals
        else:
            attrs[name] = vals
    return scores, attrs


def import_masks(
    view,
    folder: str,
    field: str = "sam_masks",
    overwrite: bool = False,
    progress: Progress = None,
) -> int:
    """Fill ``field`` (``fo.Detections`` with instance masks) with class-agnostic masks
    computed elsewhere: ``<folder>/<image stem>/`` in segment-anything's ``amg.py`` layout
    (one PNG per mask + ``metadata.csv``) or ``<folder>/<image stem>.json`` (COCO RLE).
    ``confidence`` is the predicted IoU when the metadata has it."""
    from .. import amgio

    folder = Path(folder)
    if not folder.is_dir():
        raise SeplError(f"mask folder not found: {folder}")
    pending = _begin(view, field, "import_masks", {"folder": str(folder.resolve())}, overwrite)

    empty: List[str] = []

    def compute(sample):
        stem = _stem(sample)
        sub, js = folder / stem, folder / f"{stem}.json"
        h, w = image_shape(sample)
        try:
            if sub.is_dir():
                masks, meta = amgio.read_amg_folder(sub, shape=(h, w))
            elif js.exists():
                masks, meta = amgio.read_rle_json(js, shape=(h, w))
            else:
                raise SeplError(f"neither {stem}/ nor {stem}.json in {folder}")
        except SeplError:
            raise
        except Exception as e:
            raise SeplError(f"cannot read the masks of {stem}: {e}", hint="recompute or re-export them")
        masks = np.asarray(masks, dtype=bool)
        if len(masks) == 0:
            empty.append(stem)
        if masks.ndim != 3 or masks.shape[1:] != (h, w):
            raise SeplError(f"masks are {masks.shape[-1]}x{masks.shape[-2]} but the image is {w}x{h}",
                            hint="compute the masks on the original image size")
        scores, attrs = _mask_scores(list(meta or []))
        return masks_to_detections(masks, scores=scores, attributes=attrs)

    done, failures = fill_field(pending, field, compute, progress, what="masks")
    if empty:  # stored (SAM may find nothing), but said: refining them needs allow_empty
        log.warning("%d sample(s) have an empty mask set, stored as empty Detections in '%s': %s. "
                    "`sepl refine` keeps their seed only with --allow-empty", len(empty), field,
                    ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else ""))
    raise_failures(failures, field, done)
    return done


__all__ = [
    "open_dataset", "import_voc", "import_coco", "import_folder", "read_tags_csv", "coco_label_map",
    "import_seeds", "cam_to_label", "import_cams", "import_masks",
]
