"""Reading and writing images and label maps on disk (PNG label maps with the VOC palette)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
from PIL import Image

from .classes import voc_palette
from .errors import SeplError

PathLike = Union[str, os.PathLike]

_PALETTE_FLAT = voc_palette(256).reshape(-1).tolist()


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file as a writable (H, W, 3) uint8 RGB array."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # np.asarray would give a read-only view
    except FileNotFoundError:
        raise SeplError(f"image file not found: {path}", hint="check the sample's filepath")
    except (OSError, ValueError) as e:
        raise SeplError(f"cannot read image {path}: {e}", hint="the file is corrupt or not an image; re-export it")


def read_label(path: PathLike, palette: Optional[np.ndarray] = None) -> np.ndarray:
    """Read a label-map PNG as (H, W) uint8 class indices, deciding the encoding from the file.

    - Palette ("P") and greyscale ("L", "I", "I;16") PNGs hold indices directly; a value
      that does not fit uint8 (a 16-bit PNG holding 259) is an error, never wrapped to 3.
    - An RGB(A) PNG is decoded with ``palette`` ((K, 3) uint8, default the VOC colour map,
      the format of VOC's ``SegmentationClass``) only when every pixel is one of its
      colours; anything else (e.g. class indices written into R, G and B) is an error.
    """
    try:
        with Image.open(path) as im:
            if im.mode in ("P", "L", "1"):
                return np.array(im, dtype=np.uint8)
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                return _narrow_indices(np.asarray(im), path)
            rgb = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise SeplError(f"label file not found: {path}", hint="check the folder and the id list")
    except (OSError, ValueError) as e:
        raise SeplError(f"cannot read label map {path}: {e}", hint="the PNG is corrupt; regenerate it")
    return _rgb_label(rgb, path, palette)


def _narrow_indices(arr: np.ndarray, path: PathLike) -> np.ndarray:
    """A 16/32-bit greyscale label as uint8, or a SeplError when a value does not fit."""
    if arr.size and (arr.min() < 0 or arr.max() > 255 or not np.all(np.mod(arr, 1) == 0)):
        raise SeplError(f"label map {path} holds values {arr.min()}..{arr.max()}, which do not fit in "
                        "0..255 (class indices, 255 ignore)",
                        hint="write the label as an 8-bit palette or greyscale PNG", sample=Path(path).stem)
    return arr.astype(np.uint8)


def _rgb_label(rgb: np.ndarray, path: PathLike, palette: Optional[np.ndarray]) -> np.ndarray:
    pal = voc_palette(256) if palette is None else np.asarray(palette, np.uint8).reshape(-1, 3)
    out, unknown = rgb_to_index(rgb, pal, unknown=-1)
    if unknown:
        grey = bool(np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]))
        why = " (R = G = B everywhere: class indices saved as grey RGB?)" if grey else ""
        raise SeplError(f"RGB label map {path} has {unknown} pixel(s) whose colour is not in the class "
                        f"palette{why}",
                        hint="save label maps as palette or greyscale PNGs of class indices, or in the VOC colours",
                        sample=Path(path).stem)
    return out


def rgb_to_index(rgb: np.ndarray, palette: Optional[np.ndarray] = None, unknown: int = 255):
    """Map an (H, W, 3) uint8 colour label image to (H, W) uint8 indices of ``palette``
    ((K, 3), default VOC's 256 colours; the first index wins for a repeated colour).

    With ``unknown=255`` (default) colours not in the palette become 255 and the map alone is
    returned; with ``unknown=-1`` the result is ``(map, number of unknown pixels)``.
    """
    pal = (voc_palette(256) if palette is None else np.asarray(palette)).astype(np.int64).reshape(-1, 3)
    codes = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    lut = {int(c): i for i, c in reversed(list(enumerate(codes)))}
    flat = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    uniq, inv = np.unique(flat, return_inverse=True)
    idx = np.array([lut.get(int(u), -1) for u in uniq], dtype=np.int64)
    counts = np.bincount(inv.reshape(-1), minlength=len(uniq))
    n_unknown = int(counts[idx < 0].sum())
    out = np.where(idx < 0, 255, idx).astype(np.uint8)[inv].reshape(rgb.shape[:2])
    return (out, n_unknown) if unknown == -1 else out


def write_label(path: PathLike, label: np.ndarray, palette: bool = True) -> None:
    """Write an (H, W) integer label map as a PNG (palette-mode with VOC colours by default).

    Values must fit in uint8. The file is written to a temporary name and renamed, so an
    interrupted run never leaves a truncated PNG that a resumed run would skip.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise SeplError(f"label map must be 2-D, got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise SeplError(f"label values must lie in 0..255, got {label.min()}..{label.max()}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(label.astype(np.uint8), mode="L")
    if palette:
        im = im.convert("P")
        im.putpalette(_PALETTE_FLAT)
    tmp = path.with_name(path.name + ".tmp")
    im.save(tmp, format="PNG")
    os.replace(tmp, path)


def list_ids(folder: PathLike, list_file: Optional[PathLike] = None, suffix: str = ".png") -> List[str]:
    """Ids to process: the lines of ``list_file`` or else the stems of ``folder/*suffix``, sorted."""
    if list_file is not None:
        try:
            lines = Path(list_file).read_text().split()
        except FileNotFoundError:
            raise SeplError(f"id list not found: {list_file}")
        return [ln.strip() for ln in lines if ln.strip()]
    folder = Path(folder)
    if not folder.is_dir():
        raise SeplError(f"folder not found: {folder}")
    return sorted(p.name[: -len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix))


def find_file(folder: PathLike, stem: str, suffixes: Sequence[str] = (".png", ".jpg", ".jpeg")) -> Optional[Path]:
    """The first ``folder/stem+suffix`` that exists, or None."""
    for s in suffixes:
        p = Path(folder) / f"{stem}{s}"
        if p.exists():
            return p
    return None
