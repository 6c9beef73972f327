"""sepl on FiftyOne at scale: the bulk data path on datasets shaped like real use.

Each sample carries what real use puts on it: the real VOC 2012 ground truth and TransCAM
seed (../shared/data/voc2012_train, ids of size 375x500 cycled for N > 1464), 100 SAM-like
class-agnostic masks as ``fo.Detections`` with instance masks (GT regions shifted, split and
merged, ellipses, the whole image: ``bench_merge.object_masks``), and the ``<out>_masks``
decisions field of a first refine. Every sub-case runs in its own process and prints:

- masks-field write: ms/sample to store 100 masks per sample through the bulk path;
- refine (first run, then a second run with the decisions field present): ms/sample and the
  ratio to ``sepl.merge.merge`` on the same in-memory arrays in the same process;
- evaluate (seeds vs GT): sepl vs ``fo.evaluate_segmentations`` on the same fields, each the
  first evaluation of that dataset, after both ran once on a separate 8-sample dataset (the
  warm-up's times are printed: a process's one-time costs are not a per-sample cost);
- database bytes per sample, peak memory (this process + its workers);

at N = 100 and 1000 (5000 with --large), for 10/100/300 masks per sample, 1 worker vs all
cores, and in a process that holds the ``fo.Sample`` objects it added (FiftyOne reloads
in-memory samples after its own bulk writes) vs one that does not. A last case measures one
2000x1500 sample with 300 masks against MongoDB's 16 MB document limit.

    python benchmarks/bench_scale.py [--sizes 100 1000] [--large] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

SIZE = (375, 500)


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    keep = [f for f in ("avx2", "avx512f", "avx512bw", "avx512_vpopcntdq") if f in flags]
    return " ".join(keep) or "no avx2/avx512"


def voc_pairs(n: int):
    """n (id, seed, gt) of size 375x500 from the real VOC folder, cycled."""
    from sepl.labelio import read_label
    from sepl.paths import voc_train_dir

    root = voc_train_dir()
    if root is None:
        raise SystemExit("../shared/data/voc2012_train not found: nothing to benchmark")
    pairs = []
    for sid in (root / "train.txt").read_text().split():
        gt = read_label(root / "gt" / f"{sid}.png")
        if gt.shape == SIZE:
            pairs.append((sid, read_label(root / "transcam" / f"{sid}.png"), gt))
        if len(pairs) == min(n, 1464):
            break
    return [pairs[k % len(pairs)] for k in range(n)]


def peak_mb() -> float:
    """Peak resident MB of this process plus the largest of its workers (ru_maxrss)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024


def db_bytes_per_sample(ds) -> float:
    res = list(ds._sample_collection.aggregate([{"$group": {"_id": None, "s": {"$avg": {"$bsonSize": "$$ROOT"}}}}]))
    return float(res[0]["s"]) if res else 0.0


def build(n: int, num_masks: int, hold: bool, size=SIZE):
    """A dataset of n samples (GT, seed), its masks field written through the bulk path.
    Returns (dataset, held samples or None, masks write seconds, masks encode seconds)."""
    import fiftyone as fo

    from bench_merge import object_masks
    from sepl.classes import VOC_CLASSES
    from sepl.fo._fill import BulkWriter
    from sepl.labels.raw import detections_doc

    rng = np.random.default_rng(0)
    pairs = voc_pairs(n)
    ds = fo.Dataset()
    samples = []
    for k, (sid, seed, gt) in enumerate(pairs):
        if size != SIZE:
            import cv2

            seed = cv2.resize(seed, size[::-1], interpolation=cv2.INTER_NEAREST)
            gt = cv2.resize(gt, size[::-1], interpolation=cv2.INTER_NEAREST)
        samples.append(fo.Sample(filepath=f"/nonexistent/{k:06d}_{sid}.jpg",
                                 metadata=fo.ImageMetadata(width=gt.shape[1], height=gt.shape[0]),
                                 gt=fo.Segmentation(mask=gt), seeds=fo.Segmentation(mask=seed)))
    ds.add_samples(samples, progress=False)
    targets = dict(enumerate(VOC_CLASSES))
    ds.mask_targets = {"gt": targets, "seeds": targets}
    ds.save()
    ids = [s.id for s in samples]
    if not hold:
        del samples
        gc.collect()
        samples = None
    writer = BulkWriter(ds)
    t_write = t_encode = 0.0
    for start in range(0, n, 64):
        docs = {}
        t = time.perf_counter()
        for k in range(start, min(start + 64, n)):
            _, _, gt = pairs[k]
            if size != SIZE:
                import cv2

                gt = cv2.resize(gt, size[::-1], interpolation=cv2.INTER_NEAREST)
            docs[ids[k]] = {"sam": detections_doc(_masks(object_masks, rng, gt, num_masks))}
        t_encode += time.perf_counter() - t
        t = time.perf_counter()
        writer.write(docs)
        t_write += time.perf_counter() - t
    return ds, samples, t_write, t_encode


def _masks(object_masks, rng, gt, n):
    if n <= 100 or gt.size <= 500 * 500:
        return object_masks(rng, gt, n)
    # large images: build in parts (a 300 x 2000 x 1500 bool stack is 900 MB)
    parts = [object_masks(rng, gt, min(100, n - k)) for k in range(0, n, 100)]
    return np.concatenate(parts)


def merge_alone(ds, limit: int = 30) -> float:
    """ms/sample of ``merge`` on in-memory arrays of the first ``limit`` samples."""
    from sepl.fo._fill import read_rows
    from sepl.labels import raw
    from sepl.merge import merge

    rows = read_rows(ds, ds.limit(limit).values("id"), ["seeds", "sam"])
    arrays = [(raw.label_map(r["fields"]["seeds"], "seeds"), raw.detection_masks(r["fields"]["sam"], "sam", *r["shape"]))
              for r in rows]
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        for seed, masks in arrays:
            merge(seed, masks, mode="paper", num_classes=21)
        best = min(best, time.perf_counter() - t)
    return 1000 * best / len(arrays)


def time_evaluations(ds) -> tuple:
    """Seconds of sepl's ``evaluate`` and of ``fo.evaluate_segmentations`` (seeds vs GT) on ``ds``."""
    import fiftyone.utils.eval as foue

    from sepl.fo import evaluate

    t = time.perf_counter()
    evaluate(ds, "seeds", "gt")
    sepl_s = time.perf_counter() - t
    t = time.perf_counter()
    foue.evaluate_segmentations(ds, "seeds", gt_field="gt", eval_key="fo_eval",
                                mask_targets=ds.mask_targets["gt"], progress=False)
    return sepl_s, time.perf_counter() - t


def warm_up_evaluations() -> dict:
    """Run both evaluations once on a separate 8-sample dataset, so that one-time costs of the
    process (imports, first calls) are not counted per sample against either; returns their
    times in ms."""
    ds, _, _, _ = build(8, 10, False, SIZE)
    try:
        return {k: round(1000 * v, 1) for k, v in zip(("sepl", "fo"), time_evaluations(ds))}
    finally:
        ds.delete()


def case(spec: dict) -> dict:
    import fiftyone.core.sample as fos

    from sepl.fo import refine

    n, m, hold, workers = spec["n"], spec["masks"], spec["hold"], spec["workers"]
    out: dict = dict(spec)
    ds, held, t_write, t_encode = build(n, m, hold, tuple(spec.get("size", SIZE)))
    try:
        out["held_in_memory"] = len(fos.Sample._instances.get(ds._sample_collection_name, {}))
        out["masks_write_ms"] = 1000 * t_write / n
        out["masks_encode_ms"] = 1000 * t_encode / n
        t = time.perf_counter()
        refine(ds, "seeds", "sam", "sepl", num_workers=workers)
        out["refine_first_ms"] = 1000 * (time.perf_counter() - t) / n
        t = time.perf_counter()
        refine(ds, "seeds", "sam", "sepl_b", num_workers=workers)
        out["refine_ms"] = 1000 * (time.perf_counter() - t) / n
        out["db_bytes"] = db_bytes_per_sample(ds)
        out["peak_mb"] = peak_mb()  # build + refines (before the merge baseline decodes arrays)
        out["merge_ms"] = merge_alone(ds)
        out["refine_vs_merge"] = out["refine_ms"] / out["merge_ms"]
        if spec.get("evaluate", True):
            out["eval_warmup_ms"] = warm_up_evaluations()
            sepl_s, fo_s = time_evaluations(ds)
            out["sepl_eval_ms"], out["fo_eval_ms"] = 1000 * sepl_s / n, 1000 * fo_s / n
            out["eval_speedup"] = out["fo_eval_ms"] / out["sepl_eval_ms"]
        if held is not None:  # the held samples see what was written, without a reload
            s = held[0]
            out["held_sees_writes"] = s["sepl_b"] is not None and len(s["sepl_masks"].detections) == m
    finally:
        ds.delete()
    return out


def large_case(spec: dict) -> dict:
    """One 2000x1500 sample with 300 masks: sizes against the 16 MB limit."""
    from sepl.fo import refine

    out: dict = dict(spec)
    ds, _, t_write, _ = build(1, spec["masks"], False, (1500, 2000))
    try:
        sam_bytes = list(ds._sample_collection.aggregate([{"$project": {"s": {"$bsonSize": "$sam"}}}]))[0]["s"]
        out["masks_field_bytes"] = sam_bytes
        out["db_bytes_before_refine"] = db_bytes_per_sample(ds)
        refine(ds, "seeds", "sam", "sepl", num_workers=1)
        out["db_bytes_after_refine"] = db_bytes_per_sample(ds)
        out["decisions_on_disk"] = any(d.mask_path for d in ds.first().sepl_masks.detections)
        out["limit_bytes"] = 16 * 1024 * 1024
    finally:
        ds.delete()
    return out


def run_case(spec: dict) -> dict:
    env = dict(os.environ)
    res = subprocess.run([sys.executable, __file__, "--case", json.dumps(spec)], capture_output=True, text=True,
                         env=env, timeout=7200)
    lines = [x for x in res.stdout.splitlines() if x.startswith("{")]
    if res.returncode != 0 or not lines:
        return dict(spec, error=(res.stderr or res.stdout)[-1500:])
    return json.loads(lines[-1])


def fmt(r: dict) -> str:
    if "error" in r:
        return f"{r} FAILED:\n{r['error']}"
    keys = [("masks_write_ms", "masks write %.1f ms"), ("refine_first_ms", "refine#1 %.1f ms"),
            ("refine_ms", "refine#2 %.1f ms"), ("merge_ms", "merge alone %.1f ms"),
            ("refine_vs_merge", "ratio %.2fx"), ("sepl_eval_ms", "sepl eval %.2f ms"),
            ("fo_eval_ms", "fo eval %.1f ms"), ("eval_speedup", "eval speed-up %.1fx"),
            ("db_bytes", "db %.0f B/sample"), ("peak_mb", "peak %.0f MB")]
    text = ", ".join(f % r[k] for k, f in keys if k in r)
    if "eval_warmup_ms" in r:
        w = r["eval_warmup_ms"]
        text += f" (warm-up on 8 samples: sepl {w['sepl']:.0f} ms, fo {w['fo']:.0f} ms)"
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--large", action="store_true", help="also N = 5000")
    ap.add_argument("--quick", action="store_true", help="only the main cases at the first size")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        spec = json.loads(args.case)
        print(json.dumps(large_case(spec) if spec.get("large_image") else case(spec)))
        return 0

    from sepl.labels.pool import default_workers

    cores = default_workers()
    print(f"CPU flags: {cpu_flags()}; cores: {cores}")
    sizes = list(args.sizes) + ([5000] if args.large else [])
    small = sizes[0]
    base = dict(masks=100, hold=False, workers=0)  # the default: all cores, processes where they pay
    specs = [dict(base, n=n) for n in sizes]
    if not args.quick:
        specs += [dict(base, n=small, hold=True),
                  dict(base, n=small, workers=1, evaluate=False),
                  dict(base, n=small, workers=cores, evaluate=False),  # processes started whatever the size
                  dict(base, n=small, masks=10, evaluate=False),
                  dict(base, n=small, masks=300, evaluate=False),
                  dict(masks=300, large_image=True)]
    results = []
    for spec in specs:
        r = run_case(spec)
        results.append(r)
        label = ("2000x1500, 300 masks" if spec.get("large_image") else
                 f"N={spec['n']}, {spec['masks']} masks, "
                 f"{'all cores (default)' if not spec['workers'] else str(spec['workers']) + ' worker(s)'}, "
                 f"{'holds its samples' if spec['hold'] else 'holds none'}")
        print(f"[{label}] " + (json.dumps(r) if spec.get("large_image") else fmt(r)), flush=True)
    main_rows = [r for r in results if r.get("masks") == 100 and not r.get("hold") and r.get("workers") == 0
                 and "refine_ms" in r]
    if len(main_rows) > 1:
        a, b = main_rows[0], main_rows[-1]
        print(f"cost vs N: refine {a['refine_ms']:.1f} -> {b['refine_ms']:.1f} ms/sample from N={a['n']} to "
              f"N={b['n']} (per-sample ratio {b['refine_ms'] / a['refine_ms']:.2f}: 1.0 is linear)")
    print("targets: refine <= 3x merge alone; evaluate >= 20x fo.evaluate_segmentations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
