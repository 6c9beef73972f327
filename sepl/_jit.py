"""Compiled loops of the crops merge kernel (numba), for ``sepl.cropped.CropKernel``.

Two reductions over the packed crop words cost one numpy call per mask (unions: an OR of
each mask's words into its box) or several passes over index arrays (intersections: a
gather of the class planes' words, popcounts, a segmented sum); as loops they read each
word once: a 100-mask VOC merge takes ~1.2 instead of 1.6-2.1 ms (``benchmarks/bench_merge.py``).
Integer arithmetic only: the results equal the numpy code's (``tests/test_merge.py`` runs
both), so which one runs is a matter of speed alone.

Loading them costs a process ~0.3-0.6 s (numba's import, then the compiled code from its
disk cache; ~1 s more the first time ever), what ~400-1000 merges save. A merge worker of a
refine run exists for that run only, so by default (``SEPL_JIT=auto``) a process merges with
numpy and loads the loops at its 2000th merge: a run small enough to lose by them never
pays, and a worker that loads them has merged for ~14 s by then (refine ~7 ms/sample,
``benchmarks/bench_scale.py``), against a 0.3-0.6 s load. A switch at the 400th merge made a
1000-sample refine on 2 workers (500 merges each) 8% slower: 7.3 -> 7.9 ms/sample. For
refine the gain is a few percent at most: merges are a small part of it.
``SEPL_JIT=always`` loads them at the first merge, ``never`` not at all; without numba the
numpy code runs.
"""

from __future__ import annotations

import os
import threading
from importlib.util import find_spec

import numpy as np

AVAILABLE = find_spec("numba") is not None
# "auto", "always" or "never": read on every kernel; tests set it to run both paths
_env = os.environ.get("SEPL_JIT", "").strip().lower()
MODE = {"1": "always", "0": "never", "always": "always", "never": "never"}.get(_env, "auto")
WARM_CALLS = 2000
_calls = 0
_loaded = False
_lock = threading.Lock()


def active() -> bool:
    """Whether this merge uses the compiled loops (counts the merges of ``auto`` mode)."""
    global _calls
    if not AVAILABLE or MODE == "never":
        return False
    if _loaded or MODE == "always":
        return True
    _calls += 1
    return _calls > WARM_CALLS


def _load() -> None:
    """Compile (or load from the disk cache) the loops below, in place of their Python code."""
    global _loaded
    with _lock:
        if _loaded:
            return
        import numba

        g = globals()
        for name in ("_popcount", "_inters", "_union"):  # callees first: a loop calls them compiled
            g[name] = numba.njit(cache=True, nogil=True)(g[name])
        _loaded = True


def crop_inters(sets, words, start, y0, bh, w0, nw, ww):
    """(N, K) int64 popcounts of each mask's words AND the K sets' words under them.

    sets: (K, H * ww) uint64 image words; words: packed crops, mask m's from ``start[m]``,
    ``bh[m]`` rows of ``nw[m]`` words at image row ``y0[m]``, word column ``w0[m]``
    (all int64)."""
    if not _loaded:
        _load()
    return _inters(sets, words, start, y0, bh, w0, nw, ww)


def crop_union(out, rows, words, start, y0, bh, w0, nw) -> None:
    """OR the words of masks ``rows`` (int64) into ``out`` ((H, ww) uint64), in place."""
    if not _loaded:
        _load()
    _union(out, rows, words, start, y0, bh, w0, nw)


def _popcount(x):
    # the SWAR idiom: LLVM compiles it to one popcnt instruction where the CPU has one
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


def _inters(sets, words, start, y0, bh, w0, nw, ww):
    n, k = start.shape[0] - 1, sets.shape[0]
    out = np.zeros((n, k), np.int64)
    for m in range(n):
        s, cols = start[m], nw[m]
        for r in range(bh[m]):
            base = (y0[m] + r) * ww + w0[m]
            row = s + r * cols
            for j in range(cols):
                w = words[row + j]
                if w:
                    for c in range(k):
                        out[m, c] += _popcount(sets[c, base + j] & w)
    return out


def _union(out, rows, words, start, y0, bh, w0, nw):
    for i in range(rows.shape[0]):
        m = rows[i]
        s, cols = start[m], nw[m]
        for r in range(bh[m]):
            y, row = y0[m] + r, s + r * cols
            for j in range(cols):
                out[y, w0[m] + j] |= words[row + j]
