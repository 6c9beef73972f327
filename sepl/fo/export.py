"""Export a view's semantic label field to folders that segmentation training code reads.

Two layouts, both with the ignore value (255) kept as is:

- ``"voc"``: the PASCAL VOC 2012 layout that DeepLab code (torchvision's ``VOCSegmentation``,
  the DeepLab/WSSS repositories, :mod:`sepl.deeplab`) reads::

      JPEGImages/<id>.jpg
      SegmentationClass/<id>.png          palette PNG, pixel value = class index
      ImageSets/Segmentation/train.txt    one id a line (also val.txt, trainval.txt)

- ``"fiftyone"``: FiftyOne's ``fo.types.ImageSegmentationDirectory``, one per split::

      <split>/data/<id>.<ext>
      <split>/labels/<id>.png             greyscale PNG, pixel value = class index

Both write ``sepl_export.json`` (classes, ignore index, splits, source) at the root.
The export is written to a temporary sibling folder and renamed into place at the end,
so a failed export leaves nothing behind and never touches an existing folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..classes import IGNORE_INDEX
from ..errors import SeplError
from .convert import get_mask_targets, image_shape, load_label_map, sample_name

MANIFEST = "sepl_export.json"
FORMATS = ("voc", "fiftyone")
_JPEG_EXTS = (".jpg", ".jpeg")


@dataclass
class ExportResult:
    """What an export wrote."""

    out_dir: Path
    format: str
    classes: List[str]
    splits: Dict[str, List[str]] = field(default_factory=dict)  # split -> ids, in view order
    skipped: int = 0  # samples of the view in no split (split by tags only)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def class_names(targets: Dict[int, str]) -> List[str]:
    """Class names indexed 0..max(targets) (gaps named ``class_<k>``), 255 excluded."""
    keys = [k for k in targets if k != IGNORE_INDEX]
    if not keys:
        return []
    if min(keys) < 0 or max(keys) > 254:
        raise SeplError(f"mask targets use values {min(keys)}..{max(keys)}",
                        hint="training needs class indices 0..254 (255 is the ignore value)")
    return [targets.get(k, f"class_{k}") for k in range(max(keys) + 1)]


def check_out_dir(out_dir: Path, overwrite: bool, marker: str = MANIFEST) -> None:
    """Refuse a non-empty ``out_dir`` unless ``overwrite`` and it holds ``marker`` (an earlier
    export), so overwriting never deletes a folder sepl did not write."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise SeplError(f"output path {out_dir} exists and is not a folder", hint="choose another output folder")
    if not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise SeplError(f"output folder {out_dir} already exists and is not empty",
                        hint="choose another folder, or pass overwrite (--overwrite) to replace an earlier export")
    if not (out_dir / marker).exists():
        raise SeplError(f"output folder {out_dir} holds files that sepl did not write (no {marker})",
                        hint="overwrite only replaces an earlier sepl export; choose another or an empty folder")


def split_samples(
    view,
    val_fraction: float = 0.0,
    split_tags: Optional[Sequence[str]] = None,
    seed: int = 0,
) -> Tuple[Dict[str, List[str]], int]:
    """Assign the view's samples (by id) to splits.

    With ``split_tags`` (e.g. ``("train", "val")``) a sample goes to every split whose tag
    it carries and untagged samples are skipped; otherwise a seeded random ``val_fraction``
    of the samples goes to ``val`` and the rest to ``train``.

    Returns ``({split: [sample ids in view order]}, number of skipped samples)``.
    """
    ids = view.values("id")
    if split_tags:
        tags = view.values("tags")
        splits = {t: [i for i, ts in zip(ids, tags) if t in ts] for t in split_tags}
        used = set().union(*[set(v) for v in splits.values()])
        skipped = len(ids) - len(used)
        if not used:
            raise SeplError(f"no sample of the view carries any of the tags {list(split_tags)}",
                            hint="tag the samples (e.g. with the App's tag button) or split by a fraction")
        return splits, skipped
    if not 0.0 <= val_fraction < 1.0:
        raise SeplError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    n_val = int(round(val_fraction * len(ids)))
    if val_fraction > 0 and len(ids) > 1:
        n_val = min(max(n_val, 1), len(ids) - 1)
    order = np.random.default_rng(seed).permutation(len(ids))
    val = set(order[:n_val].tolist())
    splits = {"train": [i for k, i in enumerate(ids) if k not in val]}
    if n_val:
        splits["val"] = [i for k, i in enumerate(ids) if k in val]
    return splits, 0


def _unique_stems(view) -> Dict[str, str]:
    """Sample id -> file stem used as the exported id; clashing stems get the sample id appended."""
    ids, paths = view.values("id"), view.values("filepath")
    stems = [Path(p).stem for p in paths]
    counts: Dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return {i: (s if counts[s] == 1 else f"{s}_{i}") for i, s in zip(ids, stems)}


def _write_image(src: str, dst: Path, reencode: bool) -> None:
    if not reencode:
        shutil.copyfile(src, dst)
        return
    from ..labelio import read_image
    from PIL import Image

    Image.fromarray(read_image(src)).save(dst, quality=95)


def export_segmentation(
    view,
    label_field: str,
    out_dir: str | os.PathLike,
    format: str = "voc",
    val_fraction: float = 0.0,
    split_tags: Optional[Sequence[str]] = None,
    seed: int = 0,
    classes: Optional[Sequence[str]] = None,
    overwrite: bool = False,
    progress: Optional[Callable[[float, str], None]] = None,
) -> ExportResult:
    """Export ``view``'s ``label_field`` (``fo.Segmentation``) and images to ``out_dir``.

    Args:
        view: a FiftyOne dataset or view.
        label_field: the semantic label field (uint8 masks, 255 = ignore).
        out_dir: the folder to create; a non-empty one is refused unless ``overwrite``.
        format: ``"voc"`` or ``"fiftyone"`` (see the module docstring).
        val_fraction, split_tags, seed: how samples are split (:func:`split_samples`).
        classes: class names by index; default: the field's mask targets.
        overwrite: replace an earlier export in ``out_dir``.
        progress: called as ``progress(fraction, message)``.

    Every label value must be a class index or 255: a value outside the classes is an error
    naming the sample, since a trainer would otherwise crash or learn a phantom class.
    """
    if format not in FORMATS:
        raise SeplError(f"unknown export format '{format}'", hint=f"use one of {FORMATS}")
    out_dir = Path(out_dir).expanduser().resolve()
    check_out_dir(out_dir, overwrite)
    if len(view) == 0:
        raise SeplError("the view to export is empty", hint="pick a view or dataset that has samples")
    dataset = view._dataset
    if not dataset.has_field(label_field):
        raise SeplError(f"the dataset has no field '{label_field}'",
                        hint=f"label fields here: {sorted(dataset.get_field_schema(flat=False).keys())}")
    if classes is None:
        targets = get_mask_targets(dataset, label_field)
        if not targets:
            raise SeplError(f"field '{label_field}' has no mask targets, so the class names are unknown",
                            hint="set the dataset's mask targets for the field, or pass the class names")
        classes = class_names(targets)
    classes = list(classes)
    num_classes = len(classes)
    if num_classes < 2:
        raise SeplError(f"need at least 2 classes (background and one object class), got {classes}")

    splits, skipped = split_samples(view, val_fraction=val_fraction, split_tags=split_tags, seed=seed)
    stems = _unique_stems(view)
    members = {s: set(ids) for s, ids in splits.items()}
    in_split = {i: [s for s in splits if i in members[s]] for i in stems}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        total = len(view)
        for k, sample in enumerate(view.iter_samples(progress=progress is None)):
            names = in_split[sample.id]
            if not names:
                continue
            shape = image_shape(sample)
            label = load_label_map(sample, label_field, shape=shape)
            bad = [int(v) for v in np.unique(label) if v >= num_classes and v != IGNORE_INDEX]
            if bad:
                raise SeplError(
                    f"field '{label_field}' holds values {bad}, outside the {num_classes} classes "
                    f"0..{num_classes - 1} of its mask targets (and not the ignore value {IGNORE_INDEX})",
                    hint="add those classes to the field's mask targets, or fix or drop the label",
                    sample=sample_name(sample))
            _write_sample(tmp, format, sample.filepath, stems[sample.id], label, names)
            if progress is not None:
                progress((k + 1) / total, f"exported {k + 1}/{total}")
        split_ids = {s: [stems[i] for i in ids] for s, ids in splits.items()}
        _write_lists(tmp, format, split_ids)
        manifest = dict(format=format, classes=classes, ignore_index=IGNORE_INDEX,
                        splits={s: len(v) for s, v in split_ids.items()}, dataset=dataset.name,
                        label_field=label_field, skipped=skipped)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out_dir=out_dir, format=format, classes=classes, splits=split_ids, skipped=skipped)


def _write_sample(root: Path, format: str, src: str, stem: str, label: np.ndarray, splits: List[str]) -> None:
    from ..labelio import write_label

    ext = Path(src).suffix.lower()
    if format == "voc":
        # VOC readers hard-code <id>.jpg: other formats are re-encoded (quality 95)
        img_dir = root / "JPEGImages"
        img_dir.mkdir(exist_ok=True)
        _write_image(src, img_dir / f"{stem}.jpg", reencode=ext not in _JPEG_EXTS)
        write_label(root / "SegmentationClass" / f"{stem}.png", label, palette=True)
        return
    for split in splits:
        data = root / split / "data"
        data.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, data / f"{stem}{ext}")
        # greyscale, not palette: FiftyOne reads masks with OpenCV, which expands palettes to colours
        write_label(root / split / "labels" / f"{stem}.png", label, palette=False)


def _write_lists(root: Path, format: str, split_ids: Dict[str, List[str]]) -> None:
    if format != "voc":
        return
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    for split, ids in split_ids.items():
        (lists / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    if "trainval" not in split_ids and {"train", "val"} <= set(split_ids):
        seen = dict.fromkeys(split_ids["train"] + split_ids["val"])
        (lists / "trainval.txt").write_text("".join(f"{i}\n" for i in seen))


def read_manifest(root: str | os.PathLike) -> Optional[dict]:
    """The ``sepl_export.json`` of an export folder, or None when there is none."""
    path = Path(root) / MANIFEST
    if not path.exists():
        return None
    return json.loads(path.read_text())
