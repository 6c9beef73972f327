"""Train DeepLabV3 on a VOC-layout folder (torchvision ``references/segmentation`` style).

    python -m sepl.deeplab.train --data exported/ --out runs/r101 --model deeplabv3_resnet101 \\
        --backbone-weights resnet101-63fe2227.pth --epochs 30 -b 8 --crop-size 321

SGD with poly learning-rate decay per iteration, random scale/crop/flip, mixed precision on
CUDA, validation mIoU after every epoch with :class:`sepl.metrics.ConfusionMatrix`, a
checkpoint dict ``{model, optimizer, scheduler, epoch, args, ...}`` after every epoch
(``--resume`` continues from it), ``metrics.jsonl`` and ``loss.png`` / ``miou.png``.

Pieces: ``train_one_epoch``, ``evaluate``, ``checkpoint_state`` / ``save_checkpoint`` /
``load_checkpoint`` / ``resume_from`` (tensors and plain values only, read with
``weights_only=True``), ``build_datasets`` / ``build_loader`` / ``build_optimizer``, and
``train`` composing them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch import nn

from ..classes import IGNORE_INDEX
from ..errors import SeplError
from .config import TrainConfig, add_train_arguments, config_from_args
from .data import SegmentationFolder
from .logs import MetricsLog, plot_metrics
from .models import build_model, random_backbone
from .predict import predict_logits
from .transforms import eval_transforms, train_transforms

Progress = Callable[[float, str], None]

CHECKPOINT = "checkpoint.pth"
BEST = "model_best.pth"
_RUN_FILES = (CHECKPOINT, BEST, "metrics.jsonl", "loss.png", "miou.png", "config.json")


def criterion(outputs: Dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy ignoring 255, plus 0.5 x the auxiliary head's loss when present."""
    losses = {k: nn.functional.cross_entropy(v, target, ignore_index=IGNORE_INDEX) for k, v in outputs.items()}
    if "aux" not in losses:
        return losses["out"]
    return losses["out"] + 0.5 * losses["aux"]


def poly_lambda(total_iters: int, power: float = 0.9) -> Callable[[int], float]:
    """Multiplier of the base learning rate after ``it`` iterations: (1 - it/total)^power."""
    total = max(1, total_iters)
    return lambda it: (1.0 - min(it, total) / total) ** power


def train_one_epoch(model, optimizer, scheduler, loader, device, epoch: int, max_iters: int,
                    scaler=None, print_freq: int = 10, on_iter: Optional[Callable[[int, float], None]] = None,
                    log: Optional[MetricsLog] = None, verbose: bool = True) -> Dict[str, float]:
    """One epoch of at most ``max_iters`` iterations; the scheduler steps every iteration.

    Returns ``{"loss": mean loss, "iters": n, "iters_per_s": speed (data loading included)}``.
    """
    model.train()
    total_loss, n = 0.0, 0
    start = time.perf_counter()
    for image, target in loader:
        image, target = image.to(device, non_blocking=True), target.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, enabled=scaler is not None):
            loss = criterion(model(image), target)
        if not torch.isfinite(loss):
            raise SeplError(f"the training loss became {loss.item()} at epoch {epoch}, iteration {n}",
                            hint="lower the learning rate (--lr)")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        n += 1
        total_loss += loss.item()
        step = scheduler.last_epoch  # global iteration count, survives resume
        if on_iter is not None:
            on_iter(step, loss.item())
        if n % print_freq == 0 or n == max_iters:
            speed = n / (time.perf_counter() - start)
            lr = optimizer.param_groups[0]["lr"]
            if log is not None:
                log.append(dict(type="train", epoch=epoch, iter=step, loss=loss.item(), lr=lr, iters_per_s=speed))
            if verbose:
                print(f"epoch {epoch} [{n}/{max_iters}] loss {loss.item():.4f} lr {lr:.2e} {speed:.2f} it/s",
                      flush=True)
        if n >= max_iters:  # checked here, not at the top: no batch is loaded only to be dropped
            break
    elapsed = time.perf_counter() - start
    return {"loss": total_loss / max(n, 1), "iters": n, "iters_per_s": n / elapsed if elapsed > 0 else 0.0}


@torch.inference_mode()
def evaluate(model, dataset, device, num_classes: int, mode: str = "whole", crop_size: int = 513,
             amp: bool = False) -> Dict[str, object]:
    """Score the model on every item of ``dataset`` (whole images, batch 1) with the project's
    evaluator: one confusion matrix over the split, 255 ignored, mIoU over all classes."""
    from ..metrics import ConfusionMatrix

    model.eval()
    cm = ConfusionMatrix(num_classes=num_classes, ignore_index=IGNORE_INDEX)
    for k in range(len(dataset)):
        image, target = dataset[k]
        with torch.autocast(device_type=device.type, enabled=amp):
            logits = predict_logits(model, image.to(device), mode=mode, crop_size=crop_size)
        pred = logits.argmax(0).cpu().numpy()
        name = getattr(dataset, "ids", None)
        gt = target.numpy()
        if num_classes <= 255:  # uint8 label maps take the evaluator's fast path
            pred, gt = pred.astype(np.uint8), gt.astype(np.uint8)
        cm.update(pred, gt, name=name[k] if name else None)
    iou = np.asarray(cm.iou(), dtype=float)
    miou = float(cm.miou())
    return {"miou": None if np.isnan(miou) else miou, "iou": [None if np.isnan(v) else float(v) for v in iou],
            "pixel_acc": float(cm.pixel_accuracy())}


def _classes(config: TrainConfig):
    manifest = Path(config.data_dir) / "sepl_export.json"
    classes = json.loads(manifest.read_text())["classes"] if manifest.exists() else None
    n = config.num_classes
    if classes is not None and n is not None and n != len(classes):
        raise SeplError(f"num_classes={n} but the export at {config.data_dir} has {len(classes)} classes",
                        hint="leave num_classes out to use the export's classes")
    if n is None and classes is None:
        raise SeplError(f"{config.data_dir} has no sepl_export.json, so the number of classes is unknown",
                        hint="pass num_classes (--num-classes 21 for PASCAL VOC)")
    n = n or len(classes)
    return n, classes or [f"class_{i}" for i in range(n)]


def _prepare_out_dir(config: TrainConfig) -> Path:
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.resume:
        if not (out / CHECKPOINT).exists():
            raise SeplError(f"nothing to resume: {out / CHECKPOINT} does not exist",
                            hint="start a new run (drop --resume)")
        return out
    existing = [f for f in _RUN_FILES if (out / f).exists()]
    if existing and not config.overwrite:
        raise SeplError(f"run folder {out} already holds a run ({', '.join(existing)})",
                        hint="pass --resume to continue it, --overwrite to start afresh, or choose another --out")
    for f in existing:  # only the files a run writes: anything else in the folder is kept
        (out / f).unlink()
    return out


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(state: Dict[str, object], path: str | os.PathLike) -> None:
    """Write a checkpoint dict atomically (a crash mid-write leaves the previous one).

    Keep ``state`` to tensors and plain Python values (dict, list, str, int, float, bool,
    None): ``load_checkpoint`` reads with ``weights_only=True``.
    """
    from ..safeload import plain

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(plain(state), tmp)  # plain values: loadable with weights_only=True
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> Dict[str, object]:
    """A checkpoint dict written by ``save_checkpoint``, on the CPU, read with
    ``weights_only=True`` (no code in the file is run)."""
    from ..safeload import torch_load

    ckpt = torch_load(path, "checkpoint", hint="the file is corrupt or not a sepl DeepLab checkpoint; "
                                               "start a new run folder")
    if not isinstance(ckpt, dict) or "model" not in ckpt or "args" not in ckpt:
        raise SeplError(f"{path} is not a sepl DeepLab checkpoint (no 'model'/'args')")
    return ckpt


def checkpoint_state(model, optimizer, scheduler, scaler, epoch: int, args: Dict[str, object],
                     **meta: object) -> Dict[str, object]:
    """The resumable checkpoint dict (torchvision references layout): ``model``,
    ``optimizer``, ``scheduler``, ``scaler`` (None without AMP), ``epoch``, ``args``, plus
    ``meta`` (``num_classes``, ``classes``, ``best_miou``, ``miou``, ``backbone_init``)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": int(epoch), "args": args, **meta}


def build_datasets(config: TrainConfig, verbose: bool = True):
    """(train, val) ``SegmentationFolder``s of ``config.data_dir``; val is None without a
    validation list (or an empty one)."""
    train_ds = SegmentationFolder(config.data_dir, config.train_split,
                                  train_transforms(config.crop_size, config.scale_min, config.scale_max))
    if len(train_ds) < 2:
        raise SeplError(f"split '{config.train_split}' of {config.data_dir} has {len(train_ds)} images; "
                        "training needs at least 2 (batch norm needs batches of 2 or more)",
                        hint="export more samples or a larger train fraction")
    val_ds = None
    if config.val_split:
        path = Path(config.data_dir) / "ImageSets" / "Segmentation" / f"{config.val_split}.txt"
        if path.exists():
            val_ds = SegmentationFolder(config.data_dir, config.val_split, eval_transforms())
            if len(val_ds) == 0:
                val_ds = None
        if val_ds is None and verbose:
            print(f"no '{config.val_split}' images in {config.data_dir}: training without validation", flush=True)
    return train_ds, val_ds


def build_loader(train_ds, config: TrainConfig, device) -> torch.utils.data.DataLoader:
    """The shuffled training loader, seeded by ``config.seed``."""
    generator = torch.Generator().manual_seed(config.seed)
    # drop_last: a final batch of 1 would break batch norm in the ASPP pooling branch
    return torch.utils.data.DataLoader(
        train_ds, batch_size=min(config.batch_size, len(train_ds)), shuffle=True, drop_last=True,
        num_workers=config.workers, pin_memory=device.type == "cuda", generator=generator,
        persistent_workers=False)


def build_optimizer(model, config: TrainConfig, total_iters: int):
    """SGD (backbone, head, aux head at 10x lr) and the per-iteration poly schedule."""
    groups = [{"params": [p for p in model.backbone.parameters() if p.requires_grad]},
              {"params": [p for p in model.classifier.parameters() if p.requires_grad]}]
    if model.aux_classifier is not None:
        groups.append({"params": list(model.aux_classifier.parameters()), "lr": config.lr * 10})
    optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(total_iters, config.poly_power))
    return optimizer, scheduler


def resume_from(path: Path, model, optimizer, scheduler, scaler, config: TrainConfig,
                num_classes: int) -> Dict[str, object]:
    """Load the training state of checkpoint ``path`` into the given objects (refusing one
    of another model or class count); returns the checkpoint dict."""
    ckpt = load_checkpoint(path)
    old = ckpt["args"]
    if old["model"] != config.model or int(ckpt["num_classes"]) != num_classes:
        raise SeplError(f"the checkpoint in {path.parent} is a {old['model']} with {ckpt['num_classes']} classes, "
                        f"not a {config.model} with {num_classes}",
                        hint="resume with the same model and data, or start a new run folder")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    return ckpt


def _plain_args(config: TrainConfig, num_classes: int) -> Dict[str, object]:
    """The run's settings as plain values (paths as strings) for the checkpoint and config.json."""
    return {k: os.fspath(v) if isinstance(v, os.PathLike) else v
            for k, v in dict(config.to_dict(), num_classes=num_classes).items()}


def train(config: TrainConfig, progress: Optional[Progress] = None, verbose: bool = True) -> Dict[str, object]:
    """Run (or resume) the training described by ``config``.

    ``progress(fraction, message)`` is called after every iteration and every validation.
    Returns a summary: ``best_miou`` / ``last_miou`` (None without a validation split),
    ``epochs`` done, ``checkpoint``, ``best_checkpoint``, ``metrics_log``, ``iters_per_s``
    (training speed of the last epoch, data loading included), ``device``, ``backbone_init``.
    """
    from ..device import resolve_device

    if config.batch_size < 2:
        raise SeplError(f"batch size {config.batch_size} is too small", hint="use 2 or more: batch norm needs it")
    if config.epochs < 1 or (config.iters_per_epoch is not None and config.iters_per_epoch < 1):
        raise SeplError("epochs and iterations per epoch must be at least 1")
    out = _prepare_out_dir(config)
    num_classes, classes = _classes(config)
    device = resolve_device(config.device, "DeepLab training")
    _seed_all(config.seed)
    train_ds, val_ds = build_datasets(config, verbose)
    if not config.resume and not config.random_weights and random_backbone(config.model, config.backbone_weights):
        raise SeplError(f"no ImageNet backbone weights for {config.model}: refusing to train from a random backbone",
                        hint="pass --backbone-weights PATH (torchvision's resnet*.pth), put it in the torch hub "
                             "cache, or pass --random-weights to train from random weights (far lower mIoU)")
    loader = build_loader(train_ds, config, device)
    iters = len(loader) if config.iters_per_epoch is None else min(len(loader), config.iters_per_epoch)
    total_iters = iters * config.epochs

    model, backbone_init = build_model(config.model, num_classes, config.backbone_weights, config.aux_loss)
    model.to(device)
    optimizer, scheduler = build_optimizer(model, config, total_iters)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    start_epoch, best = 0, None
    if config.resume:
        ckpt = resume_from(out / CHECKPOINT, model, optimizer, scheduler, scaler, config, num_classes)
        start_epoch, best = int(ckpt["epoch"]) + 1, ckpt.get("best_miou")
        backbone_init = ckpt.get("backbone_init", backbone_init)
        if verbose:
            print(f"resumed from {out / CHECKPOINT} after epoch {ckpt['epoch']}", flush=True)

    args = _plain_args(config, num_classes)
    (out / "config.json").write_text(json.dumps(dict(args, classes=classes, backbone_init=backbone_init), indent=2))
    log = MetricsLog(out / "metrics.jsonl")
    if verbose:
        print(f"training {config.model} ({num_classes} classes) on {len(train_ds)} images, "
              f"{iters} it/epoch x {config.epochs} epochs, device {device}"
              f"{', AMP' if use_amp else ''}, backbone: {backbone_init}", flush=True)

    def on_iter(step: int, loss: float) -> None:
        if progress is not None:
            progress(min(step / max(total_iters, 1), 1.0), f"epoch {epoch + 1}/{config.epochs}, "
                                                            f"iteration {step}/{total_iters}, loss {loss:.3f}")

    last, speed = None, None
    for epoch in range(start_epoch, config.epochs):
        stats = train_one_epoch(model, optimizer, scheduler, loader, device, epoch, iters, scaler,
                                config.print_freq, on_iter, log, verbose)
        speed = stats["iters_per_s"]
        if val_ds is not None:
            last = _validate(model, val_ds, device, num_classes, config, use_amp, epoch, log, verbose)
            if progress is not None:
                shown = "n/a (no labelled pixels)" if last is None else f"{100 * last:.2f}"
                progress(min((epoch + 1) * iters / max(total_iters, 1), 1.0),
                         f"epoch {epoch + 1}/{config.epochs}: validation mIoU {shown}")
        log.append(dict(type="epoch", epoch=epoch, loss=stats["loss"], iters_per_s=speed,
                        lr=optimizer.param_groups[0]["lr"]))
        is_best = last is not None and (best is None or last > best)
        if is_best:
            best = last
        meta = dict(num_classes=num_classes, classes=list(classes), best_miou=best, miou=last,
                    backbone_init=backbone_init)
        state = checkpoint_state(model, optimizer, scheduler, scaler, epoch, args, **meta)
        save_checkpoint(state, out / CHECKPOINT)
        if is_best or val_ds is None:
            save_checkpoint({k: state[k] for k in ("model", "epoch", "args", "num_classes", "classes", "miou",
                                                   "backbone_init")}, out / BEST)
        plot_metrics(log, out)

    return {"best_miou": best, "last_miou": last, "epochs": config.epochs, "checkpoint": str(out / CHECKPOINT),
            "best_checkpoint": str(out / BEST), "metrics_log": str(log.path), "iters_per_s": speed,
            "device": str(device), "backbone_init": backbone_init, "num_classes": num_classes,
            "classes": classes}


def _validate(model, val_ds, device, num_classes: int, config: TrainConfig, use_amp: bool, epoch: int,
              log: MetricsLog, verbose: bool) -> Optional[float]:
    """``evaluate`` on the validation split, logged; the mIoU (None: no labelled pixel)."""
    metrics = evaluate(model, val_ds, device, num_classes, config.eval_mode, config.crop_size, use_amp)
    log.append(dict(type="val", epoch=epoch, **metrics))
    if verbose:
        last = metrics["miou"]
        shown = "n/a (no labelled pixels)" if last is None else f"{100 * last:.2f}"
        print(f"epoch {epoch}: validation mIoU {shown} on {len(val_ds)} images", flush=True)
    return metrics["miou"]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train DeepLabV3 on a VOC-layout folder", add_help=add_help)
    add_train_arguments(parser)
    return parser


def main(args: argparse.Namespace) -> Dict[str, object]:
    return train(config_from_args(args))


if __name__ == "__main__":  # pragma: no cover
    main(get_args_parser().parse_args())
