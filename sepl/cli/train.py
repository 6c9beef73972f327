"""``sepl train``: DeepLabV3 from a label field (or an exported folder), predictions written back."""

from __future__ import annotations

from ._common import add_command


def register(subparsers):
    from sepl.deeplab.config import add_train_arguments

    p = add_command(
        subparsers, "train",
        help="train DeepLabV3 (ResNet-50/101) on a label field or a VOC-layout folder",
        description="Train torchvision's DeepLabV3 with poly learning rate, random scale/crop/flip, mixed "
                    "precision on GPU, validation mIoU every epoch, checkpoints (--resume continues), a "
                    "metrics log (metrics.jsonl) and plots (loss.png, miou.png) in --out. With --dataset/--field "
                    "the field is first exported to <out>/data; with --predict-field the best model's "
                    "predictions are written back to the dataset. ImageNet backbone weights are read from "
                    "--backbone-weights (or the torch hub cache); without them the backbone is random.",
        examples="  sepl train --dataset voc --field sepl_labels --out runs/r101 --val-fraction 0.1 \\\n"
                 "      --backbone-weights ~/weights/resnet101-63fe2227.pth --epochs 30 --predict-field deeplab\n"
                 "  sepl train --dataset voc --field sepl_labels --out runs/r101 --resume --epochs 40\n"
                 "  sepl train --data exports/voc_sepl --out runs/r50 --model deeplabv3_resnet50 --crop-size 513\n"
                 "  sepl train --dataset voc --predict-with runs/r101/model_best.pth "
                 "--predict-field deeplab",
    )
    src = p.add_argument_group("FiftyOne input (instead of --data)")
    src.add_argument("--dataset", default=None, help="name of the FiftyOne dataset")
    src.add_argument("--view", default=None, help="name of a saved view of the dataset to restrict to")
    src.add_argument("--field", default=None, help="semantic label field to train on")
    src.add_argument("--val-fraction", type=float, default=0.1, help="random fraction of samples for validation")
    src.add_argument("--split-tags", nargs=2, default=None, metavar=("TRAIN_TAG", "VAL_TAG"),
                     help="split by sample tags instead of a fraction")
    src.add_argument("--predict-field", default=None, help="write the best model's predictions to this field")
    src.add_argument("--predict-with", default=None, metavar="CHECKPOINT",
                     help="skip training: only predict with this checkpoint into --predict-field")
    add_train_arguments(p, data_required=False)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from sepl.errors import SeplError
    from sepl.optional import require

    require("torch", "DeepLab training")
    require("torchvision", "DeepLab training")

    if args.predict_with:
        if not (args.dataset and args.predict_field):
            raise SeplError("--predict-with needs --dataset and --predict-field")
        from sepl.fo.deeplab import predict_to_field
        from ._common import load_view

        res = predict_to_field(load_view(args), args.predict_with, args.predict_field, mode=args.eval_mode,
                               device=args.device, overwrite=args.overwrite)
        print(f"wrote predictions of {args.predict_with} to '{args.predict_field}' ({res['predicted']} samples)")
        return 0
    if not args.out_dir:
        raise SeplError("training needs --out, the run folder for checkpoints, the metrics log and plots")
    if args.dataset:
        if args.data_dir:
            raise SeplError("give either --data or --dataset/--field, not both")
        if not args.field:
            raise SeplError("--dataset needs --field, the label field to train on")
        from sepl.deeplab.config import config_from_args
        from sepl.fo.deeplab import train_from_view
        from ._common import load_view

        args.data_dir = ""
        cfg = config_from_args(args).to_dict()
        for k in ("data_dir", "out_dir", "train_split", "seed"):
            cfg.pop(k)
        if args.split_tags:
            cfg.pop("val_split")
        summary = train_from_view(load_view(args), args.field, args.out_dir, val_fraction=args.val_fraction,
                                  split_tags=args.split_tags, seed=args.seed, predict_field=args.predict_field,
                                  **cfg)
    else:
        if not args.data_dir:
            raise SeplError("nothing to train on", hint="give --data FOLDER or --dataset NAME --field FIELD")
        if args.predict_field:
            raise SeplError("--predict-field needs --dataset", hint="predictions are written to a FiftyOne dataset")
        from sepl.deeplab.config import config_from_args
        from sepl.deeplab.train import train

        summary = train(config_from_args(args))
    best = summary.get("best_miou")
    speed = summary.get("iters_per_s")
    print(f"done: best validation mIoU {'n/a (no validation split)' if best is None else f'{100 * best:.2f}'}; "
          f"checkpoint {summary['checkpoint']}" + (f"; {speed:.2f} it/s on {summary['device']}" if speed else ""))
    if summary.get("predictions"):
        print(f"predictions written to '{summary['predictions']['field']}'")
    return 0
