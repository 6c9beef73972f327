"""``sepl eval``: score a folder of label maps against ground truth (dataset mIoU etc.)."""

from __future__ import annotations

from ._common import add_command

EXAMPLES = """\
  sepl eval --pred pseudo/transcam --gt VOC2012/SegmentationClass --list train.txt
  sepl eval --pred out/sepl --gt gt --json scores.json --csv per_class.csv --per-sample samples.csv
  sepl eval --pred out --gt gt --num-classes 81 --boundary 2      # COCO, with boundary F
"""


def register(subparsers):
    p = add_command(
        subparsers, "eval",
        help="score label-map PNGs against ground truth: per-class IoU, mIoU",
        description="Accumulate one confusion matrix over all images (GT --ignore-index skipped) and "
                    "print per-class IoU, precision, recall and the mean IoU over all classes: the "
                    "pseudo-label figure of the WSSS literature. Label maps are single-channel or "
                    "palette PNGs <id>.png (RGB PNGs in VOC colours are decoded too). Images that "
                    "fail (missing, unreadable, wrong size) are listed and the others are scored.",
        examples=EXAMPLES,
    )
    p.add_argument("--pred", required=True, help="folder of predicted label maps <id>.png")
    p.add_argument("--gt", required=True, help="folder of ground-truth label maps <id>.png")
    p.add_argument("--list", default=None, help="file of ids, one a line (default: every PNG in --gt)")
    p.add_argument("--num-classes", type=int, default=21, help="classes including background")
    p.add_argument("--ignore-index", type=int, default=255, help="GT value that is not scored")
    p.add_argument("--class-names", default=None, help="comma list or file of names (default: VOC/COCO by count)")
    p.add_argument("--json", default=None, help="write the full result (per class, failures) as JSON here")
    p.add_argument("--csv", default=None, help="write per-class IoU/precision/recall as CSV here")
    p.add_argument("--per-sample", default=None, help="write each image's mIoU (classes present) as CSV here")
    p.add_argument("--boundary", type=int, default=None, metavar="TOL",
                   help="also compute the mean boundary F-score with this pixel tolerance")
    p.add_argument("--workers", type=int, default=None, help="reader threads (default: up to 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def evaluate_folders(pred_dir, gt_dir, ids=None, num_classes: int = 21, ignore_index: int = 255,
                     boundary_tol=None, workers=None, progress: bool = True):
    """Score ``pred_dir/<id>.png`` against ``gt_dir/<id>.png``.

    Returns (ConfusionMatrix over the images that succeeded, {id: per-sample dict},
    [(id, error)]). Per-sample dicts hold ``miou`` (classes present) and, with
    ``boundary_tol``, ``boundary_f``.
    """
    from pathlib import Path

    from ..errors import SeplError
    from ..labelio import list_ids, read_label
    from ..metrics import ConfusionMatrix, boundary_fscore
    from ._folders import default_workers, run_per_image

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d, what in ((pred_dir, "--pred"), (gt_dir, "--gt")):
        if not d.is_dir():
            raise SeplError(f"{what} folder not found: {d}")
    if ids is None:
        ids = list_ids(gt_dir)
    if not ids:
        raise SeplError(f"no images to score in {gt_dir}", hint="check --gt and --list")

    def one(i: str):
        pred = read_label(pred_dir / f"{i}.png")
        gt = read_label(gt_dir / f"{i}.png")
        cm = ConfusionMatrix(num_classes, ignore_index).update(pred, gt, name=i)
        rec = dict(miou=cm.present_miou())
        if boundary_tol is not None:
            rec["boundary_f"] = boundary_fscore(pred, gt, boundary_tol, ignore_index)["f"]
        return cm, rec

    results, failures = run_per_image(ids, one, workers or default_workers(), "eval", progress)
    total = ConfusionMatrix(num_classes, ignore_index)
    per_sample = {}
    for i in ids:  # a fixed order, so the sums are reproducible
        if i in results:
            cm, rec = results[i]
            total.merge(cm)
            per_sample[i] = rec
    return total, per_sample, failures


def run(args) -> int:
    import csv
    import json
    import math

    import numpy as np

    from ..errors import SeplError
    from ..labelio import list_ids
    from ._folders import class_names, print_failures

    from ._common import writable_file

    for option in ("json", "csv", "per_sample"):  # before the scoring, not after it printed
        if getattr(args, option):
            writable_file(getattr(args, option), "--" + option.replace("_", "-"))
    ids = list_ids(args.gt, args.list) if args.list else None
    names = class_names(args.num_classes, args.class_names)
    cm, per_sample, failures = evaluate_folders(
        args.pred, args.gt, ids, args.num_classes, args.ignore_index, args.boundary, args.workers,
        progress=not args.no_progress)
    if not per_sample:
        print_failures(failures, "not scored")
        raise SeplError("no image could be scored", hint="see the failures above")
    summary = cm.summary(names)
    summary["images"] = len(per_sample)
    summary["failures"] = [dict(id=i, error=e) for i, e in failures]
    if args.boundary is not None:
        fs = [r["boundary_f"] for r in per_sample.values() if not math.isnan(r["boundary_f"])]
        summary["boundary_f"] = float(np.mean(fs)) if fs else None
        summary["boundary_tolerance"] = args.boundary

    width = max(len(n) for n in names)
    print(f"{'class':<{width}}  {'IoU':>6}  {'prec':>6}  {'recall':>6}")
    for row in summary["classes"]:
        print(f"{row['name']:<{width}}  {_pct(row['iou'])}  {_pct(row['precision'])}  {_pct(row['recall'])}")
    print(f"{'mIoU':<{width}}  {summary['miou'] * 100:6.2f}   ({len(per_sample)} images, "
          f"pixel accuracy {_pct(summary['pixel_accuracy']).strip()})")
    if args.boundary is not None and summary["boundary_f"] is not None:
        print(f"boundary F (tolerance {args.boundary}px): {summary['boundary_f'] * 100:.2f}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(summary["classes"][0]))
            w.writeheader()
            w.writerows(summary["classes"])
    if args.per_sample:
        with open(args.per_sample, "w", newline="") as f:
            fields = ["id"] + list(next(iter(per_sample.values())))
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            for i, rec in per_sample.items():
                w.writerow(dict(id=i, **rec))
    print_failures(failures, "not scored")
    return 1 if failures else 0


def _pct(x) -> str:
    return "   n/a" if x is None else f"{x * 100:6.2f}"
