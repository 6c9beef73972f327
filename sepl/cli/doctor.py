"""``sepl doctor``: what is installed, whether the database starts, and a dataset round trip."""

from __future__ import annotations

import importlib
import os

from ._common import add_command

OPTIONAL = ["numba", "torch", "torchvision", "segment_anything", "groundingdino", "transformers", "timm"]


def register(subparsers):
    p = add_command(
        subparsers, "doctor",
        help="check the installation: packages, FiftyOne database, plugin, GPU",
        description="Print the versions of sepl's dependencies, start FiftyOne's database and, with "
                    "--roundtrip, write and read back a temporary dataset with a segmentation.",
        examples="  sepl doctor\n  sepl doctor --roundtrip\n"
                 "  FIFTYONE_DATABASE_URI=mongodb://127.0.0.1:27017 sepl doctor   # your own MongoDB",
    )
    p.add_argument("--roundtrip", action="store_true",
                   help="also create, save, reload and delete a temporary dataset")
    p.set_defaults(func=run)
    return p


def _version(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except Exception as e:  # an optional extra that is absent or broken
        return f"not usable ({type(e).__name__})"
    return getattr(module, "__version__", "installed")


def run(args) -> int:
    import sepl
    from sepl.fo.db import database_info

    print(f"sepl             {sepl.__version__}")
    print(f"fiftyone         {_version('fiftyone')}")
    for name in OPTIONAL:
        print(f"{name:<17}{_version(name)}")
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU only)"
    except Exception:
        gpu = "unknown (no torch)"
    print(f"GPU              {gpu}")
    info = database_info()
    print(f"database         MongoDB {info['version']} ({info['uri']}), {info['datasets']} datasets")
    print(f"plugins dir      {os.environ.get('FIFTYONE_PLUGINS_DIR', '(FIFTYONE_PLUGINS_DIR not set)')}")
    if args.roundtrip:
        _roundtrip()
        print("round trip       ok: dataset written, reloaded from the database and deleted")
    return 0


def _roundtrip() -> None:
    import tempfile

    import numpy as np
    import fiftyone as fo

    from sepl.errors import SeplError
    from sepl.fo.convert import load_label_map, to_segmentation
    from sepl.labelio import write_label

    with tempfile.TemporaryDirectory() as tmp:
        img = os.path.join(tmp, "img.png")
        write_label(img, np.zeros((8, 8), np.uint8))
        label = np.arange(64, dtype=np.uint8).reshape(8, 8) % 3
        ds = fo.Dataset()
        try:
            ds.add_sample(fo.Sample(filepath=img, gt=to_segmentation(label)))
            ds.reload()
            back = load_label_map(ds.first(), "gt")
            if not np.array_equal(back, label):
                raise SeplError("the label map read back differs from the one written")
        finally:
            ds.delete()
