"""Per-row work on all cores: a process pool whose results do not depend on its size.

Rows are independent (one sample each), so a chunk is split into contiguous parts, one per
worker, and the parts' results are concatenated in order: the output of ``map_rows`` is the
same list for any ``num_workers``.

Workers are spawned, never forked: the parent holds database-client and model threads, and
a forked child can wait forever on a lock one of them held (seen here with pymongo). A
spawned child would re-run the user's script (``python my_script.py`` without an
``if __name__ == "__main__"`` guard), so the main module is hidden while workers start:
they import only the module of the function they run, with one thread each. Keep those
functions in modules that do not import FiftyOne (``sepl.labels``), so workers start fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable, List, Optional, Sequence, Tuple

from ..errors import SeplError

# A row's outcome: ("ok", value) or ("error", (message, hint))
Outcome = Tuple[str, Any]


def default_workers() -> int:
    """All cores: ``os.cpu_count()`` (at least 1)."""
    return max(1, os.cpu_count() or 1)


def resolve_workers(num_workers: Optional[int]) -> int:
    """``num_workers``, or all cores for None / 0; negative is an error."""
    if num_workers is None or num_workers == 0:
        return default_workers()
    if num_workers < 0:
        raise SeplError(f"num_workers must be >= 0, got {num_workers}", hint="0 or nothing means all cores")
    return int(num_workers)


def run_rows(fn: Callable[[Any], Any], rows: Sequence[Any]) -> List[Outcome]:
    """``fn`` on each row; a SeplError becomes that row's ("error", (message, hint))."""
    out: List[Outcome] = []
    for row in rows:
        try:
            out.append(("ok", fn(row)))
        except SeplError as e:
            out.append(("error", (e.message, e.hint)))
    return out


def _init_worker() -> None:
    # one thread per worker process: the pool is the parallelism (no oversubscription)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # pragma: no cover - OpenCV is optional here
        pass


@contextlib.contextmanager
def _main_hidden():
    """While workers are spawned, they are not told to import ``__main__`` (the user's script)."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


class RowPool:
    """``submit(fn, rows)`` -> a handle whose ``result()`` is ``run_rows(fn, rows)``, run on
    ``num_workers`` processes (in this process, synchronously, for one worker).

    ``threads=True`` runs the parts on threads of this process instead: for work that spends
    its time in code releasing the GIL (zlib, whole-array numpy), where spawning processes
    and pickling rows would cost more than the work (evaluation: ~0.5 ms per sample).

    Use as a context manager; the processes start on first use and stop on exit.
    """

    def __init__(self, num_workers: Optional[int] = 1, threads: bool = False):
        self.num_workers = resolve_workers(num_workers)
        self.threads = threads
        self._pool: Optional[Executor] = None

    def __enter__(self) -> "RowPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def submit(self, fn: Callable[[Any], Any], rows: Sequence[Any]) -> "_Pending":
        rows = list(rows)
        if self.num_workers <= 1 or len(rows) <= 1:
            return _Pending(done=run_rows(fn, rows))
        if self._pool is None and self.threads:
            self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="sepl-rows")
        elif self._pool is None:
            import multiprocessing

            self._pool = ProcessPoolExecutor(self.num_workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker)
        n = min(self.num_workers, len(rows))
        step = -(-len(rows) // n)
        if self.threads:
            return _Pending(futures=[self._pool.submit(run_rows, fn, rows[i:i + step])
                                     for i in range(0, len(rows), step)])
        with _main_hidden():  # workers start inside submit()
            futures = [self._pool.submit(run_rows, fn, rows[i:i + step]) for i in range(0, len(rows), step)]
        return _Pending(futures=futures)


class _Pending:
    def __init__(self, done: Optional[List[Outcome]] = None, futures: Optional[List[Future]] = None):
        self._done, self._futures = done, futures

    def result(self) -> List[Outcome]:
        if self._done is None:
            self._done = [o for f in self._futures for o in f.result()]
        return self._done
