"""The one place sepl turns a device name into a ``torch.device``.

Every model-running step (SAM masks, Grounded-SAM, CAM training and inference, DeepLab training
and prediction) calls ``resolve_device``, so ``--device auto`` means the same everywhere and an
unusable device fails before any work starts, with the fix in the message.
"""

from __future__ import annotations

from typing import Any, Optional

from .errors import SeplError
from .optional import require

AUTO = ("auto", None, "")


def resolve_device(device: Optional[Any] = "auto", feature: str = "") -> Any:
    """``torch.device`` for a device name.

    Args:
        device: ``"auto"`` or None (CUDA when available, else Apple MPS when available, else
            the CPU), or a name torch understands (``"cpu"``, ``"cuda"``, ``"cuda:1"``,
            ``"mps"``), or a ``torch.device``.
        feature: what needs torch, named in the error when torch is missing.

    Raises:
        SeplError: torch is not installed; the name is not a device; CUDA (or that CUDA
            index) or MPS was asked for but is not available here.
    """
    torch = require("torch", feature)
    if device in AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available(torch):
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise SeplError(f"'{device}' is not a device ({e})", hint="use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SeplError(f"device '{device}' was asked for but CUDA is not available here",
                            hint="use --device auto (or cpu), or install a CUDA build of torch on a GPU machine")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise SeplError(f"device '{device}' was asked for but this machine has {count} CUDA device(s)",
                            hint=f"use cuda:0..cuda:{count - 1}, or --device auto")
    elif dev.type == "mps" and not _mps_available(torch):
        raise SeplError(f"device '{device}' was asked for but Apple MPS is not available here",
                        hint="use --device auto (or cpu)")
    return dev


def _mps_available(torch) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and bool(mps.is_available())
