"""Label maps in the database (``Segmentation.mask``) vs on disk (``mask_path`` PNGs).

On the 1464 real VOC train ground-truth maps (~500x375): time to import (write), database
size (BSON documents), bytes of PNGs, time to read every map back
through a bulk query, through per-sample iteration, and a full ``sepl.fo.evaluate``.
The default of ``sepl.fo._fill.DEFAULT_STORAGE`` follows from these figures.

    python benchmarks/bench_fo_storage.py [--limit N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")


def coll_stats(ds):
    import fiftyone.core.odm.database as fod

    db = fod.get_db_conn()
    st = db.command("collStats", ds._sample_collection_name)
    return st["size"], st["avgObjSize"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()

    import fiftyone as fo

    from sepl.fo import evaluate, importers
    from sepl.fo.evaluate import _read_masks
    from _voc import voc_ids

    root, ids_file = voc_ids(args.limit)
    if root is None:
        print("../shared/data/voc2012_train not found")
        return 0
    quiet = lambda f, label: None  # noqa: E731
    mask_root = tempfile.mkdtemp(prefix="sepl-masks-")
    rows = []
    try:
        for storage in ("db", "disk"):
            ds = fo.Dataset()
            try:
                t = time.perf_counter()
                importers.import_voc(root, dataset=ds, ids_file=ids_file, image_dir="images", label_dir="gt",
                                     storage=storage, mask_dir=mask_root, progress=quiet)
                importers.import_seeds(ds, root / "transcam", "seeds", storage=storage, mask_dir=mask_root,
                                       progress=quiet)
                write = time.perf_counter() - t
                bson, stored = coll_stats(ds)
                png = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(mask_root) for f in fs)
                t = time.perf_counter()
                maps = _read_masks(ds, "ground_truth")
                bulk = time.perf_counter() - t
                assert len(maps) == len(ds) and all(m is not None for m in maps)
                t = time.perf_counter()
                for s in ds.select_fields("ground_truth").iter_samples():
                    s.ground_truth.get_mask()
                per = time.perf_counter() - t
                t = time.perf_counter()
                evaluate(ds, "seeds", "ground_truth")
                ev = time.perf_counter() - t
                rows.append((storage, len(ds), write, bson, stored, png, bulk, per, ev))
            finally:
                ds.delete()
            shutil.rmtree(mask_root, ignore_errors=True)
            os.makedirs(mask_root, exist_ok=True)
    finally:
        shutil.rmtree(mask_root, ignore_errors=True)
    mb = 1 / 2 ** 20
    print(f"{'storage':8} {'samples':>7} {'write s':>8} {'BSON MB':>8} {'KB/sample':>9} {'PNG MB':>7} "
          f"{'bulk read s':>11} {'iter read s':>11} {'evaluate s':>10}")
    for st, n, w, b, s_, p, bu, pe, ev in rows:
        print(f"{st:8} {n:7d} {w:8.2f} {b * mb:8.1f} {s_ / 1024:9.1f} {p * mb:7.1f} {bu:11.2f} {pe:11.2f} {ev:10.2f}")
    print("(two label fields per sample: GT and TransCAM seeds; BSON = MongoDB's uncompressed document size)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
