"""Generated scenes with exact ground truth, for tests and the demo.

Each scene has 1-3 objects of distinct classes (a shape and a texture per class) over a
cluttered, textured background with distractor shapes of no class, so that seeds and
class-agnostic masks go wrong in realistic ways. Objects may occlude each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

SYNTH_CLASSES: List[str] = ["background", "disc", "square", "triangle", "star", "ring"]

# per class: base colour (RGB) and texture kind; colours overlap the clutter palette a bit
_STYLE = {
    1: ((220, 60, 50), "stripes"),
    2: ((50, 90, 220), "checker"),
    3: ((240, 200, 40), "dots"),
    4: ((60, 180, 80), "noise"),
    5: ((170, 70, 200), "stripes"),
}


def _shape_mask(cls: int, h: int, w: int, cy: float, cx: float, r: float, angle: float) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    c = (int(cx), int(cy))
    if cls == 1:
        cv2.circle(m, c, int(r), 1, -1)
    elif cls == 5:
        cv2.circle(m, c, int(r), 1, -1)
        cv2.circle(m, c, int(r * 0.55), 0, -1)
    else:
        n = {2: 4, 3: 3, 4: 10}[cls]
        t = angle + np.arange(n) * 2 * np.pi / n
        rad = np.full(n, r)
        if cls == 4:
            rad[1::2] = r * 0.45
        pts = np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1).astype(np.int32)
        cv2.fillPoly(m, [pts], 1)
    return m.astype(bool)


def _texture(kind: str, base: Sequence[int], h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    period = rng.uniform(5, 9)
    if kind == "stripes":
        f = (np.sin((xx + yy) * 2 * np.pi / period) > 0).astype(np.float32)
    elif kind == "checker":
        f = (((xx // int(period)) + (yy // int(period))) % 2).astype(np.float32)
    elif kind == "dots":
        f = ((np.sin(xx * 2 * np.pi / period) * np.sin(yy * 2 * np.pi / period)) > 0.4).astype(np.float32)
    else:
        f = rng.random((h, w)).astype(np.float32)
    img = np.asarray(base, np.float32)[None, None] * (0.75 + 0.35 * f[..., None])
    return img


def make_scene(
    rng: np.random.Generator,
    size: Tuple[int, int] = (160, 200),
    max_objects: int = 3,
    num_clutter: int = 6,
    boundary: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
    """One scene.

    Returns:
        image: (H, W, 3) uint8 RGB.
        label: (H, W) uint8, 0 background, 1..5 the classes of ``SYNTH_CLASSES``; with
            ``boundary`` > 0 a VOC-like 255 band of that width surrounds each object.
    """
    h, w = size
    # background: smooth colour field + noise + clutter shapes of random colours
    low = rng.integers(40, 200, size=(4, 5, 3)).astype(np.float32)
    img = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 12, size=img.shape)
    for _ in range(num_clutter):
        cls = int(rng.integers(1, 6))
        m = _shape_mask(cls, h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(6, 16), rng.uniform(0, np.pi))
        img[m] = rng.integers(30, 230, size=3)
    label = np.zeros((h, w), np.uint8)
    n = int(rng.integers(1, max_objects + 1))
    classes = rng.choice(np.arange(1, 6), size=n, replace=False)
    for cls in classes:
        r = rng.uniform(0.14, 0.26) * min(h, w)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        m = _shape_mask(int(cls), h, w, cy, cx, r, rng.uniform(0, np.pi))
        base, kind = _STYLE[int(cls)]
        tex = _texture(kind, base, h, w, rng)
        img[m] = tex[m]
        label[m] = cls
    img = np.clip(img + rng.normal(0, 6, size=img.shape), 0, 255).astype(np.uint8)
    img = cv2.GaussianBlur(img, (3, 3), 0)
    if boundary > 0:
        k = np.ones((2 * boundary + 1, 2 * boundary + 1), np.uint8)
        edges = np.zeros((h, w), bool)
        for cls in np.unique(label):
            if cls == 0:
                continue
            m = (label == cls).astype(np.uint8)
            edges |= (cv2.dilate(m, k) - cv2.erode(m, k)) > 0
        label = label.copy()
        label[edges] = 255
    return img, label


def write_voc_layout(
    root: str | Path,
    num_images: int,
    seed: int = 0,
    size: Tuple[int, int] = (160, 200),
    split: str = "train",
    boundary: int = 2,
) -> Path:
    """Write ``num_images`` scenes in the PASCAL VOC 2012 layout under ``root``.

    ``JPEGImages/<id>.jpg`` (quality 95), ``SegmentationClass/<id>.png`` (VOC palette) and
    ``ImageSets/Segmentation/<split>.txt``. Returns ``root``.
    """
    from .labelio import write_label

    root = Path(root)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(num_images):
        image, label = make_scene(rng, size=size, boundary=boundary)
        sid = f"synth_{i:05d}"
        cv2.imwrite(str(root / "JPEGImages" / f"{sid}.jpg"), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        write_label(root / "SegmentationClass" / f"{sid}.png", label)
        ids.append(sid)
    (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def image_level_labels(label: np.ndarray, num_classes: Optional[int] = None) -> List[int]:
    """Sorted foreground classes present in a label map (0 and 255 excluded)."""
    present = [int(c) for c in np.unique(label) if 0 < c < 255]
    if num_classes is not None:
        present = [c for c in present if c < num_classes]
    return present
