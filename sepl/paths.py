"""Where sepl finds shared data and keeps its outputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parent.parent

# CI sets this (``.ci/run``): tests on the shared real data then fail, not skip, without it
ENV_REQUIRE = "SEPL_REQUIRE_SHARED_DATA"


def shared_data_dir() -> Optional[Path]:
    """``$SEPL_SHARED_DATA``, else ``<repo>/../shared/data`` if it exists, else None."""
    env = os.environ.get("SEPL_SHARED_DATA")
    candidates = [Path(env)] if env else [REPO_ROOT.parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def shared_data_required() -> bool:
    """Whether ``$SEPL_REQUIRE_SHARED_DATA`` asks for the shared data to be present (CI)."""
    return os.environ.get(ENV_REQUIRE, "").strip().lower() not in ("", "0", "false", "no")


def missing_shared_data_reason() -> str:
    """Where the shared VOC data was looked for, for a skip or failure message."""
    env = os.environ.get("SEPL_SHARED_DATA")
    where = f"$SEPL_SHARED_DATA={env}" if env else str(REPO_ROOT.parent / "shared" / "data")
    return f"the shared VOC data (voc2012_train/gt) is not in {where}"


def voc_train_dir() -> Optional[Path]:
    """The real VOC 2012 train GT + TransCAM seeds folder of ``shared/data``, or None."""
    root = shared_data_dir()
    if root is None or not (root / "voc2012_train" / "gt").is_dir():
        return None
    return root / "voc2012_train"
