"""Per-sample scoring pieces of ``sepl.fo.evaluate`` against their plain baselines.

On real VOC 2012 train pairs (TransCAM seed vs GT, as FiftyOne stores them: zlib'd .npy), in
one process, best of ``--repeat`` passes over all pairs:

- deflate: FiftyOne's ``serialize_numpy_array`` (standard zlib) vs ``raw.encode_array``
  (zlib-ng, same level), on the seed maps, asserted to give the same arrays back;
- inflate: the standard library's ``zlib.decompress`` vs zlib-ng (``sepl.labels.raw``);
- counts: a per-pixel ``np.bincount`` of ``gt << 8 | pred`` vs ``sepl.metrics.pair_counts``
  (runs of equal pairs), asserted equal;
- the whole job: the first release's decode + per-pixel bincount vs ``ScorePair``.

    python benchmarks/bench_scoring.py [--pairs 300] [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def best(fn, items, repeat: int) -> float:
    """Best seconds per item over ``repeat`` passes."""
    out = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for x in items:
            fn(x)
        out = min(out, time.perf_counter() - t)
    return out / len(items)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from bench_scale import cpu_flags, voc_pairs
    from sepl.labels import raw
    from sepl.labels.scoring import ScorePair
    from sepl.metrics import pair_counts

    pairs = voc_pairs(args.pairs)
    rows = [{"fields": {"gt": {"_cls": "Segmentation", "mask": raw.encode_array(g)},
                        "seeds": {"_cls": "Segmentation", "mask": raw.encode_array(s)}}} for _, s, g in pairs]
    blobs = [r["fields"][f]["mask"] for r in rows for f in ("gt", "seeds")]
    maps = [(g, s) for _, s, g in pairs]

    def per_pixel(gp):
        g, p = gp
        return np.bincount((g.astype(np.intp) << 8 | p).ravel(), minlength=65536)

    for gp in maps:  # same counts
        ref = per_pixel(gp)
        codes, counts = pair_counts(*gp)
        assert codes.tolist() == np.flatnonzero(ref).tolist() and counts.tolist() == ref[codes].tolist()

    def first_release(row):
        g, p = (np.load(io.BytesIO(zlib.decompress(row["fields"][f]["mask"]))) for f in ("gt", "seeds"))
        return per_pixel((g, p))

    from fiftyone.core.utils import deserialize_numpy_array, serialize_numpy_array

    seeds = [s for _, s, _ in pairs]
    for s in seeds:  # FiftyOne reads what sepl writes
        assert np.array_equal(deserialize_numpy_array(raw.encode_array(s)), s)

    job = ScorePair("seeds", "gt", 21)
    print(f"CPU flags: {cpu_flags()}; {len(pairs)} VOC pairs of 375x500; best of {args.repeat}")
    for label, base, new, items in [
        ("deflate a label map (FiftyOne's serialize -> encode_array)", serialize_numpy_array, raw.encode_array, seeds),
        ("inflate (zlib -> zlib-ng)", zlib.decompress, raw._inflate, blobs),
        ("pair counts (per-pixel bincount -> runs)", per_pixel, lambda gp: pair_counts(*gp), maps),
        ("score one sample (first release -> ScorePair)", first_release, job, rows),
    ]:
        a, b = best(base, items, args.repeat), best(new, items, args.repeat)
        print(f"{label}: {1e3 * a:.3f} -> {1e3 * b:.3f} ms ({a / b:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
