"""Where sepl finds shared data and keeps its outputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Optional[Path]:
    """``$SEPL_SHARED_DATA``, else ``<repo>/../shared/data`` if it exists, else None."""
    env = os.environ.get("SEPL_SHARED_DATA")
    candidates = [Path(env)] if env else [REPO_ROOT.parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def voc_train_dir() -> Optional[Path]:
    """The real VOC 2012 train GT + TransCAM seeds folder of ``shared/data``, or None."""
    root = shared_data_dir()
    if root is None or not (root / "voc2012_train" / "gt").is_dir():
        return None
    return root / "voc2012_train"
