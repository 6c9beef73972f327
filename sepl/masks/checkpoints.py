"""Finding, downloading, verifying and loading SAM checkpoints.

Where a checkpoint is looked for, in order: the path given; ``$SEPL_SAM_CHECKPOINT``;
the released file name (e.g. ``sam_vit_b_01ec64.pth``) in ``$SEPL_SAM_DIR``, in FiftyOne's
model zoo folder (``fo.config.model_zoo_dir``, where ``foz.load_zoo_model(
"segment-anything-vitb-torch")`` puts it) and in ``~/.cache/sepl``. Nothing found: a download
when asked (checksum-verified), otherwise a SeplError naming the file, its URL and where to
put it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import SeplError
from ..optional import require

ENV_CHECKPOINT = "SEPL_SAM_CHECKPOINT"
ENV_DIR = "SEPL_SAM_DIR"


@dataclass(frozen=True)
class ReleasedCheckpoint:
    filename: str
    url: str
    md5: str
    size_bytes: int
    zoo_name: str


# md5 as published alongside the files (their names carry its first 6 digits);
# sizes from FiftyOne's zoo manifest.
RELEASED: Dict[str, ReleasedCheckpoint] = {
    "vit_h": ReleasedCheckpoint("sam_vit_h_4b8939.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
                                "4b8939a88964f0f4ff5f5b2642c598a6", 2564550879, "segment-anything-vith-torch"),
    "vit_l": ReleasedCheckpoint("sam_vit_l_0b3195.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
                                "0b3195507c641ddb6910d2bb5adee89c", 1249524607, "segment-anything-vitl-torch"),
    "vit_b": ReleasedCheckpoint("sam_vit_b_01ec64.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
                                "01ec64d29a2fca3f0661936605ae66f8", 375042383, "segment-anything-vitb-torch"),
}


def fiftyone_model_zoo_dir() -> Path:
    """FiftyOne's model zoo folder, resolved as FiftyOne does (env var, config file, default)
    without importing FiftyOne, which this module must not depend on."""
    if os.environ.get("FIFTYONE_MODEL_ZOO_DIR"):
        return Path(os.environ["FIFTYONE_MODEL_ZOO_DIR"])
    config = Path(os.environ.get("FIFTYONE_CONFIG_PATH", Path.home() / ".fiftyone" / "config.json"))
    try:
        value = json.loads(config.read_text()).get("model_zoo_dir")
        if value:
            return Path(value).expanduser()
    except (OSError, ValueError):
        pass
    return Path.home() / "fiftyone" / "__models__"


def search_dirs() -> List[Path]:
    """Folders searched for released checkpoint files, in order."""
    dirs = []
    if os.environ.get(ENV_DIR):
        dirs.append(Path(os.environ[ENV_DIR]))
    dirs.append(fiftyone_model_zoo_dir())
    dirs.append(Path.home() / ".cache" / "sepl")
    return dirs


def md5sum(path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                return h.hexdigest()
            h.update(block)


def download(url: str, dest: Path, md5: Optional[str] = None, size_bytes: Optional[int] = None) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``md5`` (and size) before it lands.

    A failed or corrupt download leaves nothing at ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out, length=1 << 22)
        if size_bytes is not None and os.path.getsize(tmp) != size_bytes:
            raise SeplError(f"download of {url} has {os.path.getsize(tmp)} bytes, expected {size_bytes}",
                            hint="retry the download; the connection was probably cut")
        if md5 is not None and md5sum(tmp) != md5:
            raise SeplError(f"download of {url} fails its checksum (md5 {md5} expected)",
                            hint="retry the download, or fetch the file by hand")
        os.replace(tmp, dest)
    except OSError as e:
        raise SeplError(f"cannot download {url}: {e}",
                        hint=f"no network? download it elsewhere and put it at {dest}")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def resolve_checkpoint(model_type: str, checkpoint: Optional[str] = None, download_missing: bool = False) -> Optional[str]:
    """The checkpoint file to load for ``model_type``, or None for ``tiny`` with none given.

    Raises SeplError when the given path (or ``$SEPL_SAM_CHECKPOINT``) does not exist, or
    when no released file is found and ``download_missing`` is False (or fails).
    """
    for what, path in (("checkpoint", checkpoint), (ENV_CHECKPOINT, os.environ.get(ENV_CHECKPOINT))):
        if path:
            if not os.path.isfile(path):
                raise SeplError(f"SAM checkpoint '{path}' (from {what}) does not exist",
                                hint="check the path, or unset it to search the usual folders")
            return str(path)
    if model_type not in RELEASED:
        if model_type == "tiny":
            return None  # the tiny test model has no released weights (build_sam needs random_weights)
        from .build import MODEL_TYPES

        raise SeplError(f"unknown SAM model type '{model_type}'", hint=f"use one of {', '.join(MODEL_TYPES)}")
    rel = RELEASED[model_type]
    dirs = search_dirs()
    for d in dirs:
        if (d / rel.filename).is_file():
            return str(d / rel.filename)
    if download_missing:
        return str(download(rel.url, dirs[0] / rel.filename, rel.md5, rel.size_bytes))
    where = ", ".join(str(d) for d in dirs)
    raise SeplError(
        f"no SAM {model_type} checkpoint found: {rel.filename} is not in {where}",
        hint=(f"download {rel.url} ({rel.size_bytes / 1e6:.0f} MB, md5 {rel.md5}) into one of those folders, "
              f"or set {ENV_CHECKPOINT}=/path/to/{rel.filename}, or pass --download where a network exists; "
              "without SAM weights, --source superpixels gives classical (NOT SAM) masks"),
    )


def sam_weights(model_type: str, checkpoint: Optional[str] = None, random_weights: bool = False,
                download_missing: bool = False) -> Optional[str]:
    """The checkpoint to build SAM ``model_type`` from, or None for random weights, which
    only ``random_weights=True`` allows. Cheap (no model is built): callers check it before
    they store anything."""
    try:
        path = resolve_checkpoint(model_type, checkpoint, download_missing=download_missing and not random_weights)
    except SeplError:
        if not random_weights or checkpoint:
            raise
        return None
    if path is None and not random_weights:
        from .build import NO_CHECKPOINT_HINT

        raise SeplError(f"no checkpoint for SAM '{model_type}': refusing to run SAM with random weights",
                        hint=NO_CHECKPOINT_HINT)
    return path


def _detect_type(state: dict) -> Optional[str]:
    from .build import SAM_CONFIGS

    w = state.get("image_encoder.patch_embed.proj.weight")
    if w is None:
        return None
    blocks = {k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")}
    for name, cfg in SAM_CONFIGS.items():
        if cfg.encoder_embed_dim == w.shape[0] and cfg.encoder_depth == len(blocks):
            return name
    return None


def read_state_dict(path: str) -> dict:
    """The state dict stored at ``path`` (a plain dict of tensors, as SAM releases them)."""
    require("torch", "SAM masks")
    from ..safeload import torch_load

    # weights_only: a pickle payload is refused, never run
    state = torch_load(path, "SAM checkpoint",
                       hint="the file is corrupt or not a SAM checkpoint; delete it and download it again")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # fine-tuning scripts often wrap the weights
    if not isinstance(state, dict) or not state:
        raise SeplError(f"SAM checkpoint '{path}' holds no state dict", hint="point at a SAM .pth weights file")
    return state


def load_state_dict(sam, path: str, model_type: str) -> None:
    """Load the weights at ``path`` into ``sam`` (a model of ``model_type``), strictly."""
    state = read_state_dict(path)
    own = sam.state_dict()
    found = _detect_type(state)
    mismatched = [k for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    missing = [k for k in own if k not in state]
    if found is not None and found != model_type or mismatched:
        what = f"a {found} checkpoint" if found else "a checkpoint of another architecture"
        raise SeplError(f"'{path}' is {what}, but model type {model_type} was asked for",
                        hint=f"pass model type {found}" if found else "use the checkpoint that matches the model type")
    if missing:
        raise SeplError(f"SAM checkpoint '{path}' lacks {len(missing)} weights (e.g. {missing[0]})",
                        hint="the file is not a complete SAM checkpoint; download it again")
    sam.load_state_dict(state)
