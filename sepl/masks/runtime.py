"""Device choice, image batching for the SAM encoder, and retrying on CUDA out-of-memory."""

from __future__ import annotations

import logging
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from ..errors import SeplError
from ..optional import require

log = logging.getLogger(__name__)
T = TypeVar("T")


def resolve_device(device: str = "auto"):
    """``torch.device`` for SAM (``sepl.device.resolve_device``)."""
    from ..device import resolve_device as _resolve

    return _resolve(device, "SAM masks")


def resolve_dtype(dtype: Optional[str]):
    """None/"float32" -> None (no autocast); "bfloat16"/"float16" -> the torch dtype."""
    torch = require("torch", "SAM masks")
    if dtype in (None, "float32", "fp32"):
        return None
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise SeplError(f"unknown dtype '{dtype}'", hint="use float32, bfloat16 or float16")
    return table[dtype]


def is_oom(err: BaseException) -> bool:
    torch = require("torch")
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


class BatchSize:
    """A batch size that shrinks on out-of-memory and stays shrunk for later calls."""

    def __init__(self, value: int):
        self.value = max(1, int(value))


def with_oom_retry(fn: Callable[[Sequence], List[T]], items: Sequence, batch_size, what: str = "batch") -> List[T]:
    """``fn`` applied to consecutive chunks of ``items``, concatenated.

    On CUDA out-of-memory the chunk is retried at half its size (down to 1) and the
    smaller size is kept for the rest (and, when ``batch_size`` is a ``BatchSize``, for
    later calls); only a single item that does not fit is an error.
    """
    torch = require("torch")
    state = batch_size if isinstance(batch_size, BatchSize) else BatchSize(batch_size)
    out: List[T] = []
    i = 0
    while i < len(items):
        bs = state.value
        chunk = items[i:i + bs]
        try:
            res = fn(chunk)
        except Exception as e:
            if not is_oom(e):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if bs == 1:
                raise SeplError(f"out of memory on a single {what}: {str(e)[:200]}",
                                hint="use a smaller model type, fewer points per batch, or --device cpu")
            state.value = max(1, len(chunk) // 2)
            log.warning("out of memory: retrying with %s size %d", what, state.value)
            continue
        out.extend(res)
        i += len(chunk)
    return out


def check_image(image, name: str = "image") -> np.ndarray:
    """``image`` as an (H, W, 3) uint8 array, or a SeplError saying what it is."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
        raise SeplError(f"{name} must be an (H, W, 3) uint8 RGB array, got {image.shape} {image.dtype}",
                        hint="load it with sepl.labelio.read_image")
    return np.ascontiguousarray(image[..., :3])


class ImageEncoder:
    """Runs SAM's image encoder over several images at once.

    Each image is resized to the model's long side (``ResizeLongestSide``), normalised and
    padded exactly as ``SamPredictor.set_image`` does, then stacked. A batch of one gives the
    predictor's features exactly; larger batches run other float kernels, so the features
    agree with the predictor's up to rounding (~1e-6), not bit for bit.
    """

    def __init__(self, sam, batch_size: int = 4, dtype: Optional[str] = None):
        sa = require("segment_anything", "SAM masks")
        self.sam = sam
        self.batch_size = BatchSize(batch_size)
        self.dtype = resolve_dtype(dtype)
        self.transform = sa.utils.transforms.ResizeLongestSide(sam.image_encoder.img_size)

    def input_size(self, hw: Tuple[int, int]) -> Tuple[int, int]:
        return self.transform.get_preprocess_shape(hw[0], hw[1], self.sam.image_encoder.img_size)

    def _prepare(self, image: np.ndarray):
        torch = require("torch")
        x = torch.as_tensor(self.transform.apply_image(image), device=self.sam.device)
        return self.sam.preprocess(x.permute(2, 0, 1).contiguous()[None])

    def _encode(self, images: Sequence[np.ndarray]) -> List:
        torch = require("torch")
        x = torch.cat([self._prepare(im) for im in images])
        dev = self.sam.device.type
        with torch.no_grad(), torch.autocast(dev, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            feats = self.sam.image_encoder(x)
        return list(feats.float().unbind(0))

    def __call__(self, images: Sequence[np.ndarray]) -> List:
        """One (C, h, w) float32 feature tensor per (H, W, 3) uint8 image."""
        return with_oom_retry(self._encode, list(images), self.batch_size, what="image batch")
