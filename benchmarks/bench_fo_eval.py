"""sepl's FiftyOne evaluation vs ``fo.evaluate_segmentations`` on the 1464 real VOC train samples.

Both runs write per-sample fields and store dataset results under an eval key, on the same
dataset in the same process (ground truth + TransCAM seeds in the database). Prints the
times, the speed ratio and the mIoU each gives (FiftyOne reports no IoU: it is computed
here from its stored confusion matrix, to show where the two disagree).

    python benchmarks/bench_fo_eval.py [--limit N] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")


def miou_from(cm):
    import numpy as np

    cm = np.asarray(cm, dtype=float)
    tp = np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmean(tp / (cm.sum(0) + cm.sum(1) - tp)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N ids")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of each (best kept)")
    args = ap.parse_args()

    import fiftyone as fo
    import fiftyone.utils.eval as foue

    from sepl.fo import evaluate, importers
    from _voc import voc_ids

    root, ids_file = voc_ids(args.limit)
    if root is None:
        print("../shared/data/voc2012_train not found: nothing to benchmark")
        return 0
    ds = fo.Dataset()
    try:
        t = time.perf_counter()
        importers.import_voc(root, dataset=ds, ids_file=ids_file, image_dir="images", label_dir="gt", storage="db")
        importers.import_seeds(ds, root / "transcam", "transcam", storage="db", progress=lambda f, label: None)
        print(f"import: {len(ds)} samples, GT + seeds, {time.perf_counter() - t:.1f} s")
        targets = ds.mask_targets["ground_truth"]

        fo_times, sepl_times = [], []
        for r in range(args.repeat):
            t = time.perf_counter()
            fo_res = foue.evaluate_segmentations(ds, "transcam", gt_field="ground_truth", eval_key="fo_eval",
                                                 mask_targets=targets, progress=False)
            fo_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            (sepl_res,) = evaluate(ds, "transcam", "ground_truth")
            sepl_times.append(time.perf_counter() - t)
        fo_t, sepl_t = min(fo_times), min(sepl_times)
        print(f"fo.evaluate_segmentations: {fo_t:.2f} s (runs: {', '.join(f'{x:.2f}' for x in fo_times)})")
        print(f"sepl.fo.evaluate:          {sepl_t:.2f} s (runs: {', '.join(f'{x:.2f}' for x in sepl_times)})")
        print(f"speed-up: {fo_t / sepl_t:.1f}x")
        print(f"sepl mIoU (21 classes, 255 ignored): {100 * sepl_res.miou():.2f}")
        print(f"IoU from FiftyOne's confusion matrix: {100 * miou_from(fo_res.pixel_confusion_matrix):.2f} "
              f"(FiftyOne itself reports accuracy {fo_res.metrics()['accuracy']:.4f}, no IoU)")
        per = ds.values("transcam_miou")
        print(f"per-sample mIoU fields: {sum(v is not None for v in per)} written; fo per-sample fields: "
              f"{[f for f in ds.get_field_schema() if f.startswith('fo_eval_')]}")
    finally:
        ds.delete()
    return 0


if __name__ == "__main__":
    sys.exit(main())
