"""Speed of the SEPL merge kernels against the released SEPL procedure, in one process.

Same inputs for every contender, outputs asserted identical (labels of all of them; the
per-mask records of the two kernels, both modes):

- ``crops``: ``merge(seed, CroppedMasks, mode="official")``, the boxes + crops kernel on
  masks held the way FiftyOne stores them (what ``sepl.fo.refine`` passes), with its
  compiled loops (``sepl._jit``, numba; loaded before timing); ``crops numpy``: the same
  kernel with its numpy code (what a process runs before its 2000th merge, or without numba);
  ``crops+build`` adds ``CroppedMasks.from_relative`` from relative boxes and crops
  (FiftyOne's ``bounding_box`` / ``mask``);
- ``planes``: ``merge(seed, stack, kernel="planes")``, the full-plane bit-packed kernel
  (the only kernel before the crops one, and the default for a full (N, H, W) stack);
- ``loop``: an in-memory per-class loop port of ``max_iou_imp2.py`` (one pass over the
  unclaimed masks per present class; ``sepl.merge.merge_reference_loop``), the baseline;
- ``released`` (``--released``): the released procedure itself, reading every mask PNG of
  the amg.py folder once per present class, and ``sepl+read`` (reading the folder once
  with ``sepl.amgio``, then merging).
- paper mode: ``crops`` and ``planes``.

Seeds: real TransCAM pseudo-labels of size 375x500 from ../shared/data when present (else
generated scenes of that size); masks: 100 per image, object-like (GT regions shifted,
split and merged, ellipses) plus a whole-image and an all-background mask.

Times are the best of ``--repeat`` consecutive runs per image and contender, as process CPU
time (steadier on a shared machine) and wall time. ``--avx2`` reruns with numpy's
AVX-512 kernels switched off (``NPY_DISABLE_CPU_FEATURES``), as on a CPU without AVX-512.

    OMP_NUM_THREADS=1 python benchmarks/bench_merge.py [--images 12] [--masks 100] [--repeat 5] [--avx2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sepl import _jit  # noqa: E402
from sepl.amgio import read_amg_folder, write_amg_folder  # noqa: E402
from sepl.cropped import CroppedMasks  # noqa: E402
from sepl.labelio import read_label  # noqa: E402
from sepl.merge import merge, merge_reference_loop  # noqa: E402
from sepl.paths import voc_train_dir  # noqa: E402

SIZE = (375, 500)
AVX512_DISPATCH = "X86_V4 AVX512_ICL AVX512_SPR"  # numpy's AVX-512 dispatch targets


def released_procedure(seed: np.ndarray, folder: str, num_classes: int = 21) -> np.ndarray:
    """The released algorithm with its I/O: every mask PNG is read once per present class."""
    seen = []
    out = np.zeros_like(seed)
    for c in range(1, num_classes):
        pc = seed == c
        if np.sum(pc) == 0:
            continue
        cand = []
        union = np.zeros_like(pc)
        for entry in os.scandir(folder):
            if entry.is_file() and entry.path.endswith("png") and entry.path not in seen:
                m = np.array(Image.open(entry.path)) == 255
                union = np.logical_or(union, m)
                inter = np.sum((pc == m) * pc)
                if 2 * inter - np.sum(m) > 0 or inter / np.sum(pc) >= 0.85:
                    cand.append(m)
                    seen.append(entry.path)
        cand.append(np.logical_and(union == 0, pc == 1))
        out[np.sum(cand, axis=0) > 0] = c
    return out


def object_masks(rng: np.random.Generator, gt: np.ndarray, n: int) -> np.ndarray:
    """n masks of a SAM-like mix: objects (shifted), object halves, pairs merged, blobs, image."""
    h, w = gt.shape
    objs = [gt == c for c in np.unique(gt) if c not in (0, 255)]
    out = [np.ones((h, w), bool), gt == 0]
    for o in objs:
        out.append(np.roll(o, tuple(rng.integers(-6, 7, 2)), axis=(0, 1)))
        ys, xs = np.nonzero(o)
        if ys.size:
            cut = np.median(xs)
            xx = np.arange(w)[None, :]
            out += [o & (xx < cut), o & (xx >= cut)]
    if len(objs) > 1:
        out.append(objs[0] | objs[1])
    yy, xx = np.mgrid[:h, :w]
    while len(out) < n:
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        ry, rx = rng.integers(4, 120, 2)
        out.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1)
    return np.stack(out[:n])


def as_fiftyone_stores(masks: np.ndarray):
    """Relative [x, y, w, h] boxes and tight crops (own arrays), as ``fo.Detection`` holds them
    (the layout of ``sepl.fo.convert.masks_to_detections``)."""
    n, h, w = masks.shape
    tight = CroppedMasks.from_planes(masks)
    rel = []
    for x0, y0, x1, y1 in tight.boxes.tolist():
        rel.append([x0 / w, y0 / h, (x1 - x0) / w, (y1 - y0) / h])
    return np.array(rel), [c.copy() for c in tight.crops]


def load_inputs(num_images: int, num_masks: int, rng):
    root = voc_train_dir()
    pairs = []
    if root is not None:
        for sid in (root / "train.txt").read_text().split():
            seed = read_label(root / "transcam" / f"{sid}.png")
            if seed.shape == SIZE:
                gt = read_label(root / "gt" / f"{sid}.png")
                pairs.append((sid, seed, gt))
            if len(pairs) == num_images:
                break
        source = "TransCAM seeds (VOC 2012 train)"
    else:
        from sepl.synth import make_scene

        for k in range(num_images):
            _, gt = make_scene(rng, size=SIZE)
            seed = np.where(gt == 255, 0, gt).astype(np.uint8)
            seed[:, ::4] = 0
            pairs.append((f"synth_{k}", seed, gt))
        source = "generated scenes"
    return [(sid, seed, object_masks(rng, gt, num_masks)) for sid, seed, gt in pairs], source


def cpu_description() -> str:
    flags = set()
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    want = ("avx2", "avx512f", "avx512bw", "avx512_vpopcntdq")
    cpu = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in want) if flags else "flags unknown"
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

        disp = ", ".join(f"{d} {'on' if __cpu_features__.get(d) else 'off'}" for d in __cpu_dispatch__)
    except ImportError:
        disp = "?"
    off = os.environ.get("NPY_DISABLE_CPU_FEATURES", "")
    jit = "numba " + __import__("numba").__version__ if _jit.AVAILABLE else "numba not installed"
    return (f"CPU: {model}; {os.cpu_count()} cores; {cpu}\n"
            f"numpy {np.__version__} dispatch targets: {disp}"
            + (f" (NPY_DISABLE_CPU_FEATURES={off!r})" if off else "") + f"; {jit}")


def timed(fns: dict, repeat: int, slow=("loop", "released", "sepl+read")) -> dict:
    """Best (cpu, wall) seconds per contender over ``repeat`` consecutive runs (warm caches,
    as when a merge follows the decoding of its masks); the slow baselines run fewer times."""
    best = {}
    for k, fn in fns.items():
        b = [np.inf, np.inf]
        for _ in range(max(1, repeat // 2) if k in slow else repeat):
            c, t = time.process_time(), time.perf_counter()
            fn()
            c, t = time.process_time() - c, time.perf_counter() - t
            b = [min(b[0], c), min(b[1], t)]
        best[k] = b
    return best


class numpy_code:
    """Within it, the crops kernel runs its numpy code (``sepl._jit`` off)."""

    def __enter__(self):
        self.saved, _jit.MODE = _jit.MODE, "never"

    def __exit__(self, *exc):
        _jit.MODE = self.saved


def numpy_merge(seed, cm):
    with numpy_code():
        return merge(seed, cm, mode="official", num_classes=21)


def assert_same_records(a, b) -> None:
    assert np.array_equal(a.labels, b.labels)
    for key in a.records:
        assert np.array_equal(np.asarray(a.records[key]), np.asarray(b.records[key])), key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--masks", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5, help="best of this many runs per image and contender")
    ap.add_argument("--released", action="store_true", help="also time the released PNG-per-class procedure")
    ap.add_argument("--avx2", action="store_true", help="rerun with numpy's AVX-512 kernels switched off")
    args = ap.parse_args()
    if args.avx2 and os.environ.get("NPY_DISABLE_CPU_FEATURES") != AVX512_DISPATCH:
        env = dict(os.environ, NPY_DISABLE_CPU_FEATURES=AVX512_DISPATCH)
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    print(cpu_description(), flush=True)
    _jit.MODE = "always"  # the contenders choose; the loops load before anything is timed
    rng = np.random.default_rng(0)
    inputs, source = load_inputs(args.images, args.masks, rng)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for sid, seed, masks in inputs:
            rel, crops = as_fiftyone_stores(masks)
            cm = CroppedMasks.from_relative(rel, crops, seed.shape)
            assert np.array_equal(cm.to_planes(), masks), sid
            ref = merge(seed, masks, mode="official", num_classes=21, kernel="planes")
            for mode in ("official", "paper"):
                a = merge(seed, masks, mode=mode, num_classes=21, kernel="planes")
                b = merge(seed, cm, mode=mode, num_classes=21)
                assert np.array_equal(a.labels, b.labels), (sid, mode)
                for key in a.records:
                    assert np.array_equal(np.asarray(a.records[key]), np.asarray(b.records[key])), (sid, mode, key)
            assert np.array_equal(ref.labels, merge_reference_loop(seed, masks, 21)), sid
            for mode in ("official", "paper"):  # compiled loops == numpy code
                with numpy_code():
                    a = merge(seed, cm, mode=mode, num_classes=21)
                assert_same_records(a, merge(seed, cm, mode=mode, num_classes=21))
            fns = {
                "crops": lambda: merge(seed, cm, mode="official", num_classes=21),
                "crops numpy": lambda: numpy_merge(seed, cm),
                "crops+build": lambda: merge(seed, CroppedMasks.from_relative(rel, crops, seed.shape),
                                             mode="official", num_classes=21),
                "planes": lambda: merge(seed, masks, mode="official", num_classes=21, kernel="planes"),
                "paper crops": lambda: merge(seed, cm, mode="paper", num_classes=21),
                "paper planes": lambda: merge(seed, masks, mode="paper", num_classes=21, kernel="planes"),
                "loop": lambda: merge_reference_loop(seed, masks, 21),
            }
            if args.released:
                folder = os.path.join(tmp, sid)
                write_amg_folder(folder, masks)
                assert np.array_equal(ref.labels, released_procedure(seed, folder)), sid
                fns["sepl+read"] = lambda: merge(seed, read_amg_folder(folder)[0], mode="official", num_classes=21)
                fns["released"] = lambda: released_procedure(seed, folder)
            best = timed(fns, args.repeat)
            ncls = int(((np.unique(seed) > 0) & (np.unique(seed) < 21)).sum())
            rows.append(best)
            print(f"{sid}  classes={ncls}  " + "  ".join(f"{k} {v[0] * 1e3:.2f}" for k, v in best.items())
                  + f"  (ms CPU)  loop/crops {best['loop'][0] / best['crops'][0]:.1f}x", flush=True)
    n = len(rows)
    print()
    print(f"inputs: {n} images {SIZE[0]}x{SIZE[1]} from {source}, {args.masks} masks each; labels identical "
          f"in every contender, records identical in both kernels and modes, compiled loops or numpy code")
    for clock, i in (("CPU time", 0), ("wall time", 1)):
        tot = {k: sum(r[k][i] for r in rows) for k in rows[0]}
        print(f"mean ms/image ({clock}): " + " | ".join(f"{k} {v / n * 1e3:.2f}" for k, v in tot.items()))
        ratios = [r["loop"][i] / r["crops"][i] for r in rows]
        print(f"  per-class loop / crops kernel: {tot['loop'] / tot['crops']:.1f}x "
              f"(per image: median {np.median(ratios):.1f}x, min {min(ratios):.1f}x); "
              f"loop / planes kernel: {tot['loop'] / tot['planes']:.1f}x; "
              f"planes / crops: {tot['planes'] / tot['crops']:.2f}x; "
              f"loop / (crops+build): {tot['loop'] / tot['crops+build']:.1f}x; "
              f"paper planes / paper crops: {tot['paper planes'] / tot['paper crops']:.2f}x")
        nratios = [r["loop"][i] / r["crops numpy"][i] for r in rows]
        print(f"  per-class loop / crops kernel, numpy code: {tot['loop'] / tot['crops numpy']:.1f}x "
              f"(per image: median {np.median(nratios):.1f}x, min {min(nratios):.1f}x)")
        if args.released:
            print(f"  released (PNG per class) / crops: {tot['released'] / tot['crops']:.1f}x; "
                  f"released / sepl+read: {tot['released'] / tot['sepl+read']:.1f}x")


if __name__ == "__main__":
    main()
