"""A VOC-layout folder as a torch dataset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch

from ..errors import SeplError
from ..labelio import find_file, read_image, read_label
from .transforms import to_tensors


def read_split(root: str | os.PathLike, split: str) -> List[str]:
    """Ids listed in ``root/ImageSets/Segmentation/<split>.txt``."""
    path = Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not path.exists():
        have = sorted(p.stem for p in path.parent.glob("*.txt")) if path.parent.is_dir() else []
        raise SeplError(f"no id list for split '{split}' at {path}",
                        hint=f"lists present: {have}" if have else "export the data with `sepl export` first")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


class SegmentationFolder(torch.utils.data.Dataset):
    """Images ``JPEGImages/<id>.jpg`` and labels ``SegmentationClass/<id>.png`` of one split.

    Items are ``transforms(image, target)`` with image (3, H, W) uint8 and target (H, W)
    int64 before the transforms. An image and label of different sizes are an error.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transforms: Optional[Callable] = None):
        self.root = Path(root)
        if not (self.root / "JPEGImages").is_dir() or not (self.root / "SegmentationClass").is_dir():
            raise SeplError(f"{self.root} is not a VOC-layout folder (JPEGImages/, SegmentationClass/)",
                            hint="export a label field with `sepl export --format voc`")
        self.split = split
        self.ids = read_split(self.root, split)
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.ids)

    def paths(self, index: int) -> Tuple[Path, Path]:
        sid = self.ids[index]
        img = find_file(self.root / "JPEGImages", sid, (".jpg", ".jpeg", ".png"))
        if img is None:
            raise SeplError(f"image of '{sid}' not found in {self.root / 'JPEGImages'}", sample=sid)
        return img, self.root / "SegmentationClass" / f"{sid}.png"

    def load(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The untransformed (image uint8 (3, H, W), target int64 (H, W)) pair."""
        img_path, lbl_path = self.paths(index)
        image, label = read_image(img_path), read_label(lbl_path)
        if image.shape[:2] != label.shape:
            raise SeplError(f"image is {image.shape[1]}x{image.shape[0]} but its label is "
                            f"{label.shape[1]}x{label.shape[0]}", hint="re-export the label at the image's size",
                            sample=self.ids[index])
        return to_tensors(image, label)

    def __getitem__(self, index: int):
        image, target = self.load(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
