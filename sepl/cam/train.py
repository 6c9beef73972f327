"""Training a CAM network from image-level labels (torchvision ``references`` style).

``TrainConfig`` holds every knob; ``train(...)`` builds the model, optimiser and poly
schedule, runs ``train_one_epoch`` per epoch, writes ``checkpoint.pth`` (a dict with
``model``, ``optimizer``, ``scheduler``, ``epoch``, ``args``, ``net``, ``history``) after
every epoch and a ``loss_curve.png``, and resumes from a checkpoint when asked.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..errors import SeplError
from ..safeload import plain
from .losses import hfpl_loss
from .net import CAMNet, build_cam_net, load_model_state, net_config

ProgressFn = Callable[[float, str], None]


@dataclasses.dataclass
class TrainConfig:
    """Training options. Defaults follow HFPL on VOC (SGD, lr 0.01 poly, batch 8, crop 448,
    8 epochs, IS weight 0.2 with 10 samples, FS weight 1.0, mu 2.5, sigma 5)."""

    arch: str = "resnet50"
    output_stride: int = 16
    width: int = 32                      # tiny backbone only
    backbone_weights: Optional[str] = None
    random_weights: bool = False         # allow a ResNet backbone from random init (recorded in args)
    epochs: int = 8
    batch_size: int = 8
    optimizer: str = "sgd"               # "sgd" or "adamw"
    lr: float = 0.01
    head_lr_mult: float = 10.0           # the 1x1 head is new: it learns faster
    momentum: float = 0.9
    weight_decay: float = 5e-4
    crop_size: int = 448
    scale_range: Tuple[float, float] = (0.7, 1.3)
    color_jitter: Tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.1)
    importance_sampling: bool = True
    is_weight: float = 0.2
    num_samples: int = 10
    feature_similarity: bool = True
    fs_weight: float = 1.0
    fs_mu: float = 2.5
    fs_sigma: float = 5.0
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["scale_range"], d["color_jitter"] = list(self.scale_range), list(self.color_jitter)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        for k in ("scale_range", "color_jitter"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


PRESETS: Dict[str, TrainConfig] = {
    # HFPL's VOC recipe on a torchvision ResNet-50 (pass ImageNet backbone weights)
    "hfpl-voc": TrainConfig(),
    # seconds-to-a-minute CPU runs on small images (generated scenes, tests, demos); no hue
    # jitter, since on such data colour is what tells the classes apart. The feature-similarity
    # sigma is scaled to the 12-16 cell logit grid (HFPL's 5 cells are for a 56-cell grid);
    # importance sampling is off: on generated scenes it lowered seed mIoU (issue notes).
    "cpu-tiny": TrainConfig(arch="tiny", output_stride=8, epochs=40, batch_size=8, optimizer="sgd", lr=0.05,
                            head_lr_mult=1.0, weight_decay=1e-4, crop_size=96, color_jitter=(0.3, 0.3, 0.3, 0.0),
                            fs_sigma=1.5,
                            importance_sampling=False, feature_similarity=True),
}


def get_config(config: Union[None, str, TrainConfig]) -> TrainConfig:
    """A TrainConfig from a preset name (``PRESETS``), a TrainConfig, or None (HFPL VOC)."""
    if config is None:
        return TrainConfig()
    if isinstance(config, TrainConfig):
        return config
    if config not in PRESETS:
        raise SeplError(f"unknown training preset '{config}'", hint=f"choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[config])


# the architecture-defining options: a checkpoint whose values differ cannot be resumed
_ARCH_KEYS = ("arch", "output_stride", "width")


class ImageLabelSet(Dataset):
    """Images with multi-hot labels, augmented for CAM training.

    Args:
        images: file paths or (H, W, 3) uint8 RGB arrays.
        labels: (N, C) multi-hot over the foreground classes.
    Items: ((3, S, S) float32 image in [0, 1], (C,) float32 labels), S = ``crop_size``.
    Augmentation: random rescale in ``scale_range``, horizontal flip, colour jitter, random
    crop (zero padding where the image is smaller than the crop).
    """

    def __init__(self, images: Sequence[Union[str, np.ndarray]], labels: np.ndarray, crop_size: int,
                 scale_range=(0.7, 1.3), color_jitter=(0.3, 0.3, 0.3, 0.1), train: bool = True):
        if len(images) != len(labels):
            raise SeplError(f"{len(images)} images but {len(labels)} label rows")
        self.images, self.labels = list(images), np.asarray(labels, np.float32)
        self.crop_size, self.scale_range, self.train = crop_size, scale_range, train
        self.jitter = None
        if train and color_jitter and any(color_jitter):
            from torchvision.transforms import ColorJitter

            self.jitter = ColorJitter(*color_jitter)

    def __len__(self) -> int:
        return len(self.images)

    def _load(self, i: int) -> np.ndarray:
        item = self.images[i]
        if isinstance(item, np.ndarray):
            return item
        from ..labelio import read_image

        return read_image(item)

    def __getitem__(self, i: int):
        img = torch.from_numpy(np.ascontiguousarray(self._load(i))).permute(2, 0, 1).float().div_(255.0)
        if self.train:
            lo, hi = self.scale_range
            s = float(np.random.uniform(lo, hi))
            h, w = img.shape[1:]
            size = (max(8, int(round(h * s))), max(8, int(round(w * s))))
            img = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False)[0].clamp_(0, 1)
            if np.random.rand() < 0.5:
                img = img.flip(2)
            if self.jitter is not None:
                img = self.jitter(img)
        img = _random_crop(img, self.crop_size, random=self.train)
        return img, torch.from_numpy(self.labels[i])


def _random_crop(img: torch.Tensor, size: int, random: bool = True) -> torch.Tensor:
    c, h, w = img.shape
    out = img.new_zeros((c, size, size))
    ch, cw = min(h, size), min(w, size)
    sy = np.random.randint(0, h - ch + 1) if random else (h - ch) // 2
    sx = np.random.randint(0, w - cw + 1) if random else (w - cw) // 2
    dy = np.random.randint(0, size - ch + 1) if random else (size - ch) // 2
    dx = np.random.randint(0, size - cw + 1) if random else (size - cw) // 2
    out[:, dy:dy + ch, dx:dx + cw] = img[:, sy:sy + ch, sx:sx + cw]
    return out


def _seed_worker(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2 ** 32)


def resolve_device(device: str) -> torch.device:
    """``torch.device`` for CAM training (``sepl.device.resolve_device``)."""
    from ..device import resolve_device as _resolve

    return _resolve(device, "CAM training")


def make_optimizer(model: CAMNet, cfg: TrainConfig) -> torch.optim.Optimizer:
    backbone, head = model.parameter_groups()
    groups = [dict(params=backbone, lr=cfg.lr), dict(params=head, lr=cfg.lr * cfg.head_lr_mult)]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise SeplError(f"unknown optimizer '{cfg.optimizer}'", hint="use 'sgd' or 'adamw'")


def poly_scheduler(optimizer: torch.optim.Optimizer, total_iters: int, power: float = 0.9):
    """Per-iteration poly decay ``(1 - it / total) ** power`` (stepped every iteration)."""
    total = max(1, total_iters)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: max(0.0, 1 - it / total) ** power)


def train_one_epoch(
    model: CAMNet,
    optimizer: torch.optim.Optimizer,
    scheduler,
    loader: DataLoader,
    cfg: TrainConfig,
    device: torch.device,
    epoch: int,
    on_iter: Optional[Callable[[int, Dict[str, float]], None]] = None,
) -> List[Dict[str, float]]:
    """One pass over ``loader``; returns the per-iteration loss terms (floats)."""
    model.train()
    history = []
    for i, (images, labels) in enumerate(loader):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        z = model(images)
        terms = hfpl_loss(
            z, labels, images,
            importance_sampling=cfg.importance_sampling, is_weight=cfg.is_weight, num_samples=cfg.num_samples,
            feature_similarity=cfg.feature_similarity, fs_weight=cfg.fs_weight, fs_mu=cfg.fs_mu,
            fs_sigma=cfg.fs_sigma,
        )
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise SeplError(f"the loss became {loss.item()} at epoch {epoch}, iteration {i}",
                            hint="lower the learning rate (--lr)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        row = {k: float(v.detach()) for k, v in terms.items()}
        row["lr"] = optimizer.param_groups[0]["lr"]
        history.append(row)
        if on_iter is not None:
            on_iter(i, row)
    return history


def save_checkpoint(path: Union[str, Path], model, optimizer, scheduler, epoch: int, cfg: TrainConfig,
                    history: List[Dict[str, Any]]) -> None:
    """Write the checkpoint dict atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = dict(model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                epoch=epoch, args=cfg.to_dict(), net=net_config(model), history=history)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(plain(ckpt), tmp)  # plain values: loadable with weights_only=True
    os.replace(tmp, path)


def load_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a checkpoint file with a SeplError for missing or unreadable files."""
    from ..safeload import torch_load

    if not Path(path).is_file():
        raise SeplError(f"checkpoint not found: {path}", hint="train first (sepl cam train) or fix the path")
    # tensors and plain values only (no code runs from the file); a TrainConfig stored as
    # such by an older writer is the one class accepted besides
    with torch.serialization.safe_globals([TrainConfig]):
        ckpt = torch_load(path, "CAM checkpoint")
    if isinstance(ckpt, dict) and isinstance(ckpt.get("args"), TrainConfig):
        ckpt["args"] = ckpt["args"].to_dict()
    return ckpt


def plot_losses(history: List[Dict[str, Any]], path: Union[str, Path]) -> None:
    """Loss terms per iteration (thin) and their per-epoch means (markers) as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    keys = [k for k in ("loss", "gap", "is", "fs") if history and k in history[0]]
    it = np.arange(1, len(history) + 1)
    for k in keys:
        v = np.array([h[k] for h in history])
        (line,) = ax.plot(it, v, lw=0.7, alpha=0.5)
        epochs = np.array([h["epoch"] for h in history])
        ends = [np.flatnonzero(epochs == e)[-1] + 1 for e in np.unique(epochs)]
        means = [v[epochs == e].mean() for e in np.unique(epochs)]
        ax.plot(ends, means, "o-", color=line.get_color(), label=k)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title("CAM training losses (markers: epoch means)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _check_resumable(ckpt: Dict[str, Any], cfg: TrainConfig, class_names: Sequence[str], path) -> None:
    old = ckpt.get("args", {})
    diff = {k: (old.get(k), getattr(cfg, k)) for k in _ARCH_KEYS if old.get(k) != getattr(cfg, k)}
    if diff:
        raise SeplError(f"{path} was trained with another architecture: "
                        + ", ".join(f"{k} {a!r} (checkpoint) vs {b!r} (now)" for k, (a, b) in diff.items()),
                        hint="resume with the checkpoint's settings, or train into another output folder")
    old_names = ckpt.get("net", {}).get("class_names")
    if old_names is not None and list(old_names) != list(class_names):
        raise SeplError(f"{path} was trained on classes {old_names}, not {list(class_names)}",
                        hint="use the same classes, or train into another output folder")


def train(
    images: Sequence[Union[str, np.ndarray]],
    labels: np.ndarray,
    class_names: Sequence[str],
    cfg: TrainConfig = TrainConfig(),
    output_dir: Optional[Union[str, Path]] = None,
    resume: bool = True,
    progress: Union[bool, ProgressFn] = True,
) -> Tuple[CAMNet, List[Dict[str, Any]]]:
    """Train a CAM network.

    Args:
        images: file paths or (H, W, 3) uint8 RGB arrays.
        labels: (N, C) multi-hot over the foreground classes (``class_names[1:]``). Rows of
            all zeros are negatives (no class present), which is valid for BCE.
        class_names: "background" first, then the C foreground classes.
        output_dir: where ``checkpoint.pth`` and ``loss_curve.png`` go (nothing saved if None).
        resume: continue from ``output_dir/checkpoint.pth`` if it exists (its architecture and
            classes must match; its other settings are kept from the checkpoint).
        progress: True for a tqdm bar, False for none, or a callback (fraction, message).
    Returns:
        (model in eval mode on the CPU, history: one dict of loss terms per iteration).
    """
    labels = np.asarray(labels, np.float32)
    if labels.ndim != 2 or labels.shape[1] != len(class_names) - 1:
        raise SeplError(f"labels have shape {labels.shape}, expected (N, {len(class_names) - 1})")
    if len(images) == 0:
        raise SeplError("no training images", hint="pick a view with samples that have image-level labels")
    ckpt_path = Path(output_dir) / "checkpoint.pth" if output_dir is not None else None
    ckpt = None
    resuming = resume and ckpt_path is not None and ckpt_path.exists()
    if not resuming and cfg.arch != "tiny" and not cfg.backbone_weights and not cfg.random_weights:
        # the tiny CNN has no pretrained weights (it is trained from scratch); a ResNet is meant
        # to start from ImageNet weights, so a random start must be asked for
        raise SeplError(f"no ImageNet backbone weights for the {cfg.arch} CAM network",
                        hint="pass --backbone-weights PATH (a torchvision resnet*.pth), or --random-weights "
                             "to train it from random initialisation (far weaker CAMs)")
    if resuming:
        ckpt = load_checkpoint(ckpt_path)
        _check_resumable(ckpt, cfg, class_names, ckpt_path)
        cfg = TrainConfig.from_dict(dict(ckpt["args"], device=cfg.device, num_workers=cfg.num_workers,
                                         epochs=max(cfg.epochs, ckpt["args"]["epochs"])))

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = resolve_device(cfg.device)
    with warnings.catch_warnings():
        if ckpt is not None:
            warnings.simplefilter("ignore")  # weights come from the checkpoint
        model = build_cam_net(cfg.arch, class_names, cfg.output_stride, None if ckpt else cfg.backbone_weights,
                              width=cfg.width)
    model.to(device)
    data = ImageLabelSet(images, labels, cfg.crop_size, cfg.scale_range, cfg.color_jitter)
    bs = min(cfg.batch_size, len(data))
    g = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(data, batch_size=bs, shuffle=True, drop_last=True, num_workers=cfg.num_workers,
                        worker_init_fn=_seed_worker, generator=g, pin_memory=device.type == "cuda")
    optimizer = make_optimizer(model, cfg)
    total = len(loader) * cfg.epochs
    scheduler = poly_scheduler(optimizer, total)
    history: List[Dict[str, Any]] = []
    start_epoch = 0
    if ckpt is not None:
        load_model_state(model, ckpt["model"], str(ckpt_path))
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        # the poly schedule spans the (possibly extended) total number of iterations
        scheduler.lr_lambdas[0] = lambda it, total=total: max(0.0, 1 - it / max(1, total)) ** 0.9
        history = list(ckpt.get("history", []))
        start_epoch = int(ckpt["epoch"]) + 1

    bar = None
    if progress is True and start_epoch < cfg.epochs:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start_epoch * len(loader), desc="CAM training", unit="it")
    t0 = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(cfg.seed + epoch)  # sampling draws are reproducible per epoch, also on resume
        np.random.seed(cfg.seed + epoch)

        def on_iter(i, row, epoch=epoch):
            done = epoch * len(loader) + i + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k != "lr"})
            elif callable(progress):
                progress(done / total, f"epoch {epoch + 1}/{cfg.epochs}, loss {row['loss']:.3f}")

        rows = train_one_epoch(model, optimizer, scheduler, loader, cfg, device, epoch, on_iter)
        history.extend(dict(r, epoch=epoch) for r in rows)
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, model, optimizer, scheduler, epoch, cfg, history)
            plot_losses(history, ckpt_path.parent / "loss_curve.png")
    if bar is not None:
        bar.close()
    model.train_seconds = time.time() - t0
    model.cpu().eval()
    return model, history


def load_cam_model(path: Union[str, Path]) -> CAMNet:
    """A trained CAMNet (eval mode, CPU) from a checkpoint written by ``train``."""
    from .net import model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(path), str(path))
    return model.eval()


def epoch_means(history: List[Dict[str, Any]], key: str = "loss") -> List[float]:
    """Mean of ``key`` per epoch, in epoch order."""
    epochs = sorted({h["epoch"] for h in history})
    return [float(np.mean([h[key] for h in history if h["epoch"] == e])) for e in epochs]
