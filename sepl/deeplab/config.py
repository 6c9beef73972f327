"""The settings of a training run, and their command-line form (no torch import here)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional

MODELS = ("deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_tiny")


@dataclass
class TrainConfig:
    """One DeepLabV3 training run.

    ``data_dir`` is a VOC-layout folder (``JPEGImages``, ``SegmentationClass``,
    ``ImageSets/Segmentation/<split>.txt``), e.g. one written by ``sepl export``; its
    ``sepl_export.json`` gives the classes, else ``num_classes`` must be set.
    ``out_dir`` receives ``checkpoint.pth`` (latest, for resume), ``model_best.pth``,
    ``metrics.jsonl``, ``loss.png``, ``miou.png`` and ``config.json``.
    """

    data_dir: str
    out_dir: str
    model: str = "deeplabv3_resnet101"
    num_classes: Optional[int] = None
    backbone_weights: Optional[str] = None  # local ImageNet ResNet (or DeepLab) checkpoint
    aux_loss: bool = False
    train_split: str = "train"
    val_split: Optional[str] = "val"  # None or a missing list: no validation
    epochs: int = 30
    iters_per_epoch: Optional[int] = None  # cap, for quick runs; None = one pass over the data
    batch_size: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    crop_size: int = 321
    scale_min: float = 0.5
    scale_max: float = 2.0
    eval_mode: str = "whole"  # or "slide"
    amp: bool = True  # used on CUDA only
    workers: int = 4
    device: Optional[str] = None  # default: cuda when available
    seed: int = 0
    print_freq: int = 10
    resume: bool = False
    overwrite: bool = False
    random_weights: bool = False  # allow a ResNet backbone from random weights (recorded in args)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _at_least_two(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (batch norm needs batches of 2), got {value}")
    return value


def add_train_arguments(parser: argparse.ArgumentParser, data_required: bool = True) -> None:
    """The training options of ``sepl train`` and ``python -m sepl.deeplab.train``."""
    d = TrainConfig(data_dir="", out_dir="")
    g = parser.add_argument_group("training")
    g.add_argument("--data", dest="data_dir", required=data_required,
                   help="VOC-layout folder (JPEGImages, SegmentationClass, ImageSets/Segmentation)")
    # not required by the parser where a caller has a mode that does not train (sepl train --predict-with)
    g.add_argument("--out", dest="out_dir", required=data_required, default=None,
                   help="run folder: checkpoints, metrics log, plots")
    g.add_argument("--model", default=d.model, choices=MODELS, help="DeepLabV3 variant (tiny: for tests)")
    g.add_argument("--num-classes", type=int, default=None,
                   help="number of classes incl. background (default: from the export's sepl_export.json)")
    g.add_argument("--backbone-weights", default=None,
                   help="local ImageNet ResNet checkpoint (e.g. resnet101-63fe2227.pth); default: torch hub "
                        "cache if present, else random initialisation")
    g.add_argument("--random-weights", action="store_true",
                   help="allow a ResNet backbone from random weights when no ImageNet weights are found "
                        "(far lower mIoU; recorded in the checkpoint's args)")
    g.add_argument("--aux-loss", action="store_true", help="add the auxiliary FCN head (weight 0.5)")
    g.add_argument("--train-split", default=d.train_split, help="id list used for training")
    g.add_argument("--val-split", default=d.val_split, help="id list used for validation ('none' to skip)")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--iters-per-epoch", type=int, default=None, help="cap on iterations per epoch")
    g.add_argument("-b", "--batch-size", type=_at_least_two, default=d.batch_size, help="2 or more (batch norm)")
    g.add_argument("--lr", type=float, default=d.lr, help="initial learning rate (poly decay, power 0.9)")
    g.add_argument("--momentum", type=float, default=d.momentum)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--crop-size", type=int, default=d.crop_size)
    g.add_argument("--scale-min", type=float, default=d.scale_min)
    g.add_argument("--scale-max", type=float, default=d.scale_max)
    g.add_argument("--eval-mode", default=d.eval_mode, choices=("whole", "slide"))
    g.add_argument("--no-amp", dest="amp", action="store_false", help="disable mixed precision on GPU")
    g.add_argument("-j", "--workers", type=int, default=d.workers, help="data-loading processes")
    g.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--print-freq", type=int, default=d.print_freq)
    g.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pth")
    g.add_argument("--overwrite", action="store_true", help="start afresh in an existing run folder")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    d = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if isinstance(d.get("val_split"), str) and d["val_split"].lower() == "none":
        d["val_split"] = None
    return TrainConfig(**d)
