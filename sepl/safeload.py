"""Loading checkpoints and CAM files without running code from them.

A ``.pth``/``.pt`` or pickled ``.npy`` file can name any Python callable; unpickling it
calls that callable. Every loader of sepl goes through this module:

- ``torch_load``: ``torch.load(weights_only=True)`` (tensors, dicts, lists, tuples,
  numbers, strings); anything else is refused with a SeplError, nothing of it is run.
- ``load_npy``: ``np.load(allow_pickle=False)`` first; an object array (IRN/AMN save CAM
  dicts with ``np.save(path, {...})``) is unpickled by an Unpickler that accepts only
  numpy's array-reconstruction globals and a few harmless builtins (dict, list, tuple,
  numbers, strings and numpy arrays come through).
- ``plain``: what sepl writes into its own checkpoints, converted to those plain types,
  so that they load under ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import SeplError

PathLike = Union[str, os.PathLike]

_REFUSED_HINT = ("sepl loads only tensors and plain values from data files; re-save the weights with "
                 "torch.save(model.state_dict(), path) / the arrays with np.save, from code you trust")


def torch_load(path: PathLike, what: str = "checkpoint", hint: str = "the file is corrupt or not a torch checkpoint"):
    """``torch.load(path, map_location="cpu", weights_only=True)`` with SeplErrors.

    A file that needs other Python objects than tensors and plain values (a pickle payload,
    a whole pickled model) is refused without unpickling them.
    """
    import torch

    if not os.path.isfile(path):
        raise SeplError(f"{what} not found: {path}", hint="fix the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        detail = next((ln.strip() for ln in first if "GLOBAL" in ln or "Unsupported" in ln), first[0] if first else "")
        raise SeplError(f"{what} {path} holds Python objects other than tensors and plain values; "
                        f"refused without running them ({detail[:200]})", hint=_REFUSED_HINT)
    except Exception as e:  # truncated zip, not a torch file at all
        raise SeplError(f"cannot read {what} {path}: {type(e).__name__}: {str(e)[:200]}", hint=hint)


# numpy's array/scalar reconstruction, under the numpy 1 and numpy 2 module names
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}
_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str", "bytes",
             "bytearray", "slice", "range"}
_OTHER = {("collections", "OrderedDict"), ("_codecs", "encode")}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals needed to rebuild numpy arrays, scalars and plain containers."""

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS or (module, name) in _OTHER \
                or (module == "builtins" and name in _BUILTINS):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def restricted_unpickle(fp) -> Any:
    """Unpickle from the binary file object ``fp`` with the restricted Unpickler."""
    return _RestrictedUnpickler(fp).load()


def load_npy(path: PathLike) -> Any:
    """The contents of a ``.npy`` (or ``.npz``, as a dict of arrays) file, never running code.

    Plain arrays load with ``allow_pickle=False``; object arrays (a 0-d array holding a
    dict, as ``np.save(path, {"keys": ..., "high_res": ...})`` writes) and raw pickles go
    through the restricted Unpickler. Returns what numpy would (0-d object arrays included).
    """
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                return {k: data[k] for k in data.files}
        return data
    except FileNotFoundError:
        raise SeplError(f"file not found: {path}")
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise SeplError(f"cannot read {path.name}: {e}", hint="the file is corrupt; recompute it")
    except Exception as e:
        raise SeplError(f"cannot read {path.name}: {type(e).__name__}: {e}", hint="the file is corrupt; recompute it")
    try:
        with open(path, "rb") as fp:
            if fp.read(6) == b"\x93NUMPY":
                fp.seek(0)
                _skip_npy_header(fp)
            else:
                fp.seek(0)
            return restricted_unpickle(fp)
    except pickle.UnpicklingError as e:
        raise SeplError(f"{path.name} holds pickled Python objects other than dicts, lists and numpy arrays; "
                        f"refused without running them ({e})", hint=_REFUSED_HINT)
    except Exception as e:
        raise SeplError(f"cannot read {path.name}: {type(e).__name__}: {e}", hint="the file is corrupt; recompute it")


def _skip_npy_header(fp) -> None:
    """Move ``fp`` past the magic and header of a ``.npy`` file, to the array's data."""
    fmt = np.lib.format
    version = fmt.read_magic(fp)
    if version == (1, 0):
        fmt.read_array_header_1_0(fp)
    elif version == (2, 0):
        fmt.read_array_header_2_0(fp)
    else:  # 3.0 (utf-8 header): numpy's own reader of any version
        fmt._read_array_header(fp, version)


def plain(obj: Any) -> Any:
    """``obj`` with dataclasses as dicts, numpy scalars/arrays as Python values, paths as
    strings, tensors as they are: what ``torch.load(weights_only=True)`` reads."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return plain(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    if isinstance(obj, tuple):  # namedtuples too: plain tuples
        return tuple(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


__all__ = ["torch_load", "load_npy", "restricted_unpickle", "plain"]
