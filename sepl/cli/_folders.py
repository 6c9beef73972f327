"""Running one function per image id over folders: threads, a progress bar, and failures
collected per image so that the other images still get done."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import SeplError


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def run_per_image(
    ids: Sequence[str],
    fn: Callable[[str], Any],
    workers: int = 1,
    desc: str = "",
    progress: bool = True,
) -> Tuple[Dict[str, Any], List[Tuple[str, str]]]:
    """Call ``fn(image_id)`` for every id (threads: PNG decoding and numpy release the GIL).

    Returns ({id: result} in completion order, [(id, error message)] in id order). A
    ``SeplError`` or I/O error in one image is recorded and the rest go on; anything else
    is recorded with its type name (a bug, but one image must not lose a long run).
    """
    from tqdm import tqdm

    results: Dict[str, Any] = {}
    failures: Dict[str, str] = {}

    def guarded(i: str):
        try:
            return i, fn(i), None
        except SeplError as e:
            return i, None, e.message + (f" (fix: {e.hint})" if e.hint else "")
        except (OSError, ValueError) as e:
            return i, None, f"{type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001 - reported, see docstring
            return i, None, f"unexpected {type(e).__name__}: {e}"

    bar = tqdm(total=len(ids), desc=desc, unit="img", disable=not progress, file=sys.stderr,
               dynamic_ncols=True, leave=False)
    try:
        if workers <= 1:
            it: Iterable = map(guarded, ids)
            for i, res, err in it:
                _collect(i, res, err, results, failures)
                bar.update()
        else:
            with ThreadPoolExecutor(workers) as pool:
                for i, res, err in pool.map(guarded, ids):
                    _collect(i, res, err, results, failures)
                    bar.update()
    finally:
        bar.close()
    order = {i: k for k, i in enumerate(ids)}
    return results, sorted(failures.items(), key=lambda kv: order[kv[0]])


def _collect(i, res, err, results, failures):
    if err is None:
        results[i] = res
    else:
        failures[i] = err


def print_failures(failures: List[Tuple[str, str]], what: str, limit: int = 20, file=None) -> None:
    """One line per failed image (the first ``limit``), then a count."""
    file = file or sys.stderr
    if not failures:
        return
    print(f"{len(failures)} image(s) failed ({what}):", file=file)
    for i, msg in failures[:limit]:
        print(f"  {i}: {msg}", file=file)
    if len(failures) > limit:
        print(f"  ... and {len(failures) - limit} more", file=file)


def class_names(num_classes: int, names: Optional[str] = None) -> List[str]:
    """Names for class indices: ``names`` (comma list or a file with one per line), or VOC/COCO
    by count, or the indices."""
    from ..classes import COCO_CLASSES, VOC_CLASSES

    if names:
        if os.path.exists(names):
            with open(names) as f:
                out = [ln.strip() for ln in f if ln.strip()]
        else:
            out = [n.strip() for n in names.split(",")]
        if len(out) < num_classes:
            raise SeplError(f"{len(out)} class names for {num_classes} classes",
                            hint="give one name per class, background first")
        return out[:num_classes]
    if num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    if num_classes == len(COCO_CLASSES) + 1:
        return ["background"] + list(COCO_CLASSES)
    return [str(i) for i in range(num_classes)]
