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


def read_label(path: PathLike) -> np.ndarray:
    """Read a label-map PNG as (H, W) uint8 class indices.

    Palette ("P") and greyscale PNGs hold indices directly; an RGB PNG is decoded with the
    VOC colour map (the format of VOC's ``SegmentationClass``), unknown colours become 255.
    """
    try:
        with Image.open(path) as im:
            if im.mode in ("P", "L", "I", "I;16"):
                return np.asarray(im).astype(np.uint8)
            rgb = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise SeplError(f"label file not found: {path}", hint="check the folder and the id list")
    except (OSError, ValueError) as e:
        raise SeplError(f"cannot read label map {path}: {e}", hint="the PNG is corrupt; regenerate it")
    return rgb_to_index(rgb)


def rgb_to_index(rgb: np.ndarray) -> np.ndarray:
    """Map an (H, W, 3) uint8 VOC-coloured label image to (H, W) uint8 indices (unknown -> 255)."""
    pal = voc_palette(256).astype(np.int64)
    codes = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    lut = {int(c): i for i, c in reversed(list(enumerate(codes)))}
    flat = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    uniq, inv = np.unique(flat, return_inverse=True)
    out = np.array([lut.get(int(u), 255) for u in uniq], dtype=np.uint8)[inv]
    return out.reshape(rgb.shape[:2])


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
