"""DeepLabV3 builders: torchvision's ResNet-50/101 models and a tiny one for tests.

Pretrained backbones are never downloaded: weights come from a local file
(``backbone_weights``), else from the torch hub cache when the standard ImageNet file is
already there, else the backbone starts from random weights and a warning says so
(expect a much lower mIoU: DeepLab results in papers all start from ImageNet weights).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from ..errors import SeplError

log = logging.getLogger("sepl.deeplab")

_BUILDERS: Dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def deco(fn):
        _BUILDERS[name] = fn
        return fn
    return deco


def build_model(name: str, num_classes: int, backbone_weights: Optional[str] = None,
                aux_loss: bool = False) -> Tuple[nn.Module, str]:
    """A DeepLabV3 whose forward maps (B, 3, H, W) float to ``{"out": (B, C, H, W)}``
    (and ``"aux"`` with ``aux_loss``).

    Returns ``(model, backbone_init)``: ``backbone_init`` says where the backbone weights
    came from ("random", "tiny (random)" or the file path).
    """
    if name not in _BUILDERS:
        raise SeplError(f"unknown model '{name}'", hint=f"choose one of {sorted(_BUILDERS)}")
    if num_classes < 2:
        raise SeplError(f"num_classes must be at least 2, got {num_classes}")
    return _BUILDERS[name](num_classes=num_classes, backbone_weights=backbone_weights, aux_loss=aux_loss)


def random_backbone(name: str, backbone_weights: Optional[str] = None) -> bool:
    """Whether ``build_model(name, ...)`` would start a ResNet backbone from random weights
    (no file given and torchvision's ImageNet file not in the torch hub cache). The tiny
    model has no pretrained weights at all and is not counted."""
    if backbone_weights or name not in ("deeplabv3_resnet50", "deeplabv3_resnet101"):
        return False
    from torchvision.models import ResNet50_Weights, ResNet101_Weights

    default = ResNet50_Weights.IMAGENET1K_V1 if name.endswith("50") else ResNet101_Weights.IMAGENET1K_V1
    return not (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(default.url)).exists()


def _resnet_deeplab(depth: int, num_classes: int, backbone_weights: Optional[str], aux_loss: bool):
    from torchvision.models import ResNet50_Weights, ResNet101_Weights
    from torchvision.models.segmentation import deeplabv3_resnet50, deeplabv3_resnet101

    builder, default = {50: (deeplabv3_resnet50, ResNet50_Weights.IMAGENET1K_V1),
                        101: (deeplabv3_resnet101, ResNet101_Weights.IMAGENET1K_V1)}[depth]
    # weights_backbone=None: torchvision would otherwise try to download ImageNet weights
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux_loss)
    path = backbone_weights
    if path is None:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(default.url)
        path = str(cached) if cached.exists() else None
    if path is None:
        log.warning(
            "DeepLabV3-ResNet-%d: no ImageNet backbone weights given and none in the torch hub cache "
            "(%s); the backbone starts from RANDOM weights, expect a far lower mIoU. Pass "
            "--backbone-weights PATH (torchvision's %s).", depth,
            Path(torch.hub.get_dir()) / "checkpoints", os.path.basename(default.url))
        return model, "random"
    load_backbone_weights(model, path)
    return model, str(path)


@register("deeplabv3_resnet50")
def deeplabv3_resnet50(num_classes: int, backbone_weights: Optional[str] = None, aux_loss: bool = False):
    return _resnet_deeplab(50, num_classes, backbone_weights, aux_loss)


@register("deeplabv3_resnet101")
def deeplabv3_resnet101(num_classes: int, backbone_weights: Optional[str] = None, aux_loss: bool = False):
    return _resnet_deeplab(101, num_classes, backbone_weights, aux_loss)


@register("deeplabv3_tiny")
def deeplabv3_tiny(num_classes: int, backbone_weights: Optional[str] = None, aux_loss: bool = False):
    """torchvision's DeepLabV3 and ResNet code with one bottleneck per stage, narrow
    bottlenecks and a 32-channel ASPP: the real code paths, fast enough for CPU tests."""
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.resnet import Bottleneck, ResNet
    from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabV3
    from torchvision.models.segmentation.fcn import FCNHead

    resnet = ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=8,
                    replace_stride_with_dilation=[False, True, True])
    layers = {"layer4": "out", "layer3": "aux"} if aux_loss else {"layer4": "out"}
    backbone = IntermediateLayerGetter(resnet, return_layers=layers)
    head = nn.Sequential(
        ASPP(2048, [12, 24, 36], out_channels=32),
        nn.Conv2d(32, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, num_classes, 1),
    )
    aux = FCNHead(1024, num_classes) if aux_loss else None
    model = DeepLabV3(backbone, head, aux)
    if backbone_weights:
        load_backbone_weights(model, backbone_weights)
        return model, str(backbone_weights)
    return model, "tiny (random)"


def load_backbone_weights(model: nn.Module, path: str) -> None:
    """Load a ResNet ImageNet checkpoint (torchvision's ``resnet*.pth``), a DeepLab state
    dict or a checkpoint dict with a ``"model"`` entry into ``model.backbone``.

    Every backbone tensor must be found with the right shape, so weights of another
    depth (ResNet-50 weights into ResNet-101) are an error rather than a silent half-load.
    """
    if not os.path.isfile(path):
        raise SeplError(f"backbone weights not found: {path}",
                        hint="give the path of a local torchvision ResNet checkpoint, or leave it out")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SeplError(f"cannot read backbone weights {path}: {e}", hint="is it a PyTorch state dict?")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    own = model.backbone.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        raise SeplError(
            f"backbone weights {path} do not fit this model: {len(missing)} tensors missing "
            f"(e.g. {missing[:2]}), {len(wrong)} of another shape (e.g. {wrong[:2]})",
            hint="use the ImageNet checkpoint of the same ResNet depth as --model")
    model.backbone.load_state_dict({k: state[k] for k in own})
