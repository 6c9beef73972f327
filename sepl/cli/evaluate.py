"""``sepl evaluate``: score Segmentation fields of a FiftyOne dataset (mIoU, per sample and overall)."""

from __future__ import annotations

from ._common import add_command, add_dataset_args


def register(subparsers):
    p = add_command(
        subparsers, "evaluate",
        help="per-sample and dataset mIoU of Segmentation fields of a FiftyOne dataset",
        description="Evaluate one or more prediction fields against a ground-truth field: writes "
                    "<field>_miou and <field>_class_iou on each sample, stores the confusion matrix "
                    "and per-class IoU as a FiftyOne evaluation (key = field name), and with two "
                    "fields <second>_delta per sample. For label-map folders use `sepl eval`.",
        examples="  sepl evaluate --dataset voc-train --pred seeds sepl --gt ground_truth\n"
                 "  sepl evaluate --dataset voc-train --pred sepl --worst 10\n"
                 "  sepl evaluate --dataset voc-train --pred seeds sepl --worst 10 --by delta\n"
                 "  sepl evaluate --dataset voc-train --pred seeds sepl --plots figures/\n"
                 "  sepl evaluate --dataset voc-train --pred deeplab --match-by name",
    )
    add_dataset_args(p)
    p.add_argument("--pred", nargs="+", required=True, help="prediction field(s); two = before, after")
    p.add_argument("--gt", default="ground_truth", help="ground-truth Segmentation field")
    p.add_argument("--worst", type=int, default=0, help="also list the N worst samples of the last field")
    p.add_argument("--by", choices=["miou", "delta"], default="miou", help="what --worst sorts by")
    p.add_argument("--plots", help="folder to write per-class IoU bars and the per-sample histogram into")
    p.add_argument("--skip-bad", action="store_true", help="report unscorable samples without failing")
    p.add_argument("--overwrite", action="store_true", help="replace an evaluation made otherwise")
    p.add_argument("--match-by", choices=["index", "name"], default="index",
                   help="how prediction values meet GT classes: 'index' (value k = GT class k; a field "
                        "whose mask targets name classes differently is refused) or 'name' (map by class name)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from sepl.fo.evaluate import evaluate
    from sepl.fo.views import score_field, worst_samples

    from ._common import load_view

    from ._common import writable_dir

    if args.plots:  # before the evaluation is stored, not after it
        writable_dir(args.plots, "--plots")
    view = load_view(args)
    results = evaluate(view, args.pred, args.gt, overwrite=args.overwrite, strict=not args.skip_bad,
                       match_by=args.match_by)
    for r in results:
        print(f"{r.config.pred_field}: mIoU {100 * r.miou():.2f} on {r.num_samples} samples "
              f"({len(r.failures)} skipped)")
        for name, iou in r.class_iou().items():
            print(f"  {name:>16} {100 * iou:6.2f}")
    if args.plots:
        import os

        from sepl.plots import plot_class_iou, plot_miou_histogram

        last = results[-1]
        base = results[0].iou() if len(results) == 2 else None
        plot_class_iou(last.iou(), last.classes, baseline=base,
                       labels=(last.key, results[0].key), path=os.path.join(args.plots, f"{last.key}_class_iou.png"))
        field = f"{last.key}_delta" if len(results) == 2 else f"{last.key}_miou"
        plot_miou_histogram(view.values(field), xlabel=field, path=os.path.join(args.plots, f"{field}_hist.png"))
        print(f"figures written to {args.plots}")
    if args.worst:
        import os

        key = results[-1].key
        field = score_field(view, key, args.by)
        paths, scores = worst_samples(view, key, by=args.by, limit=args.worst).values(["filepath", field])
        for path, score in zip(paths, scores):
            print(f"worst: {os.path.splitext(os.path.basename(path))[0]}  {field} {score:.4f}")
    return 0
