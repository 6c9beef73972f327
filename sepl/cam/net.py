"""The CAM classifier: a convolutional backbone, a 1x1 classifier head, GAP for image logits.

The head is applied before pooling, so the per-pixel logit map ``z`` (N, C, h, w) *is* the
class activation map; image logits are its spatial mean (a linear head commutes with GAP).
Images go in as float RGB in [0, 1]; the ImageNet normalisation lives inside the model so
that losses needing the raw colours (feature similarity) and inference see one convention.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..errors import SeplError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CAMNet(nn.Module):
    """Backbone + 1x1 classifier head.

    Args:
        backbone: maps (N, 3, H, W) normalised images to (N, D, H/s, W/s) features.
        feat_dim: D.
        class_names: all classes *including* "background" at index 0; the head predicts
            the C = len(class_names) - 1 foreground classes.
        config: how the model was built (``arch``, ``output_stride``, ...); stored in
            checkpoints so a model is rebuilt from its file alone.
    """

    def __init__(self, backbone: nn.Module, feat_dim: int, class_names: Sequence[str], config: Dict[str, Any]):
        super().__init__()
        if len(class_names) < 2:
            raise SeplError(f"a CAM network needs at least one foreground class, got {list(class_names)}",
                            hint="pass the class names with 'background' first")
        self.backbone = backbone
        self.classifier = nn.Conv2d(feat_dim, len(class_names) - 1, kernel_size=1, bias=False)
        self.class_names = list(class_names)
        self.config = dict(config)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        """Foreground classes C (the head's outputs)."""
        return len(self.class_names) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, H, W) float RGB in [0, 1] -> (N, C, h, w) logit map (the CAM before ReLU)."""
        return self.classifier(self.backbone((x - self.mean) / self.std))

    @staticmethod
    def image_logits(z: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) logit map -> (N, C) image logits by global average pooling."""
        return z.mean(dim=(2, 3))

    def parameter_groups(self) -> List[List[nn.Parameter]]:
        """[backbone params, head params]: the head is new, so it trains with a larger lr."""
        return [list(self.backbone.parameters()), list(self.classifier.parameters())]


def _conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _tiny_backbone(output_stride: int, width: int = 32):
    """A 6-conv network for tests and CPU demos (trains in seconds on 2 cores).

    Strides 2, 2, 2 reach 8 (one more for 16); the last conv is dilated once. Large
    dilations on a small grid mostly read padding and leave grid artefacts in the CAM.
    """
    w = width
    layers = [_conv_bn(3, w // 2, 2), _conv_bn(w // 2, w, 2), _conv_bn(w, w), _conv_bn(w, 2 * w, 2)]
    if output_stride == 16:
        layers += [_conv_bn(2 * w, 4 * w, 2)]
    else:
        layers += [_conv_bn(2 * w, 4 * w)]
    layers += [_conv_bn(4 * w, 4 * w, dilation=2)]
    return nn.Sequential(*layers), 4 * w


def _dilate_basic_resnet(net, output_stride: int) -> None:
    # torchvision's BasicBlock refuses dilation; set strides/dilations on the convs instead
    stages = {8: (net.layer3, net.layer4), 16: (net.layer4,)}[output_stride]
    dilation = 1
    for stage in stages:
        dilation *= 2
        for i, block in enumerate(stage):
            for conv in (block.conv1, block.conv2):
                conv.stride = (1, 1)
                d = dilation // 2 if (i == 0 and conv is block.conv1) else dilation
                conv.dilation, conv.padding = (d, d), (d, d)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)


def _resnet_backbone(name: str, output_stride: int, weights: Optional[str]):
    import torchvision

    if output_stride not in (8, 16, 32):
        raise SeplError(f"output stride {output_stride} is not supported", hint="use 8, 16 or 32")
    basic = name in ("resnet18", "resnet34")
    kwargs = {}
    if not basic and output_stride != 32:
        kwargs["replace_stride_with_dilation"] = [False, output_stride == 8, True]
    net = getattr(torchvision.models, name)(weights=None, **kwargs)
    if basic and output_stride != 32:
        _dilate_basic_resnet(net, output_stride)
    if weights:
        load_backbone_weights(net, weights)
    else:
        warnings.warn(f"{name}: no backbone weights given, starting from random initialisation "
                      "(pass an ImageNet checkpoint path for real training)", stacklevel=3)
    feat_dim = net.fc.in_features
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return body, feat_dim


def load_backbone_weights(net: nn.Module, path: str) -> None:
    """Load an ImageNet classifier checkpoint (a state dict, or a dict holding ``model`` /
    ``state_dict``) into a torchvision ResNet; the ``fc`` layer is allowed to be missing."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SeplError(f"backbone weights not found: {path}",
                        hint="download e.g. torchvision's resnet50 ImageNet weights where a network exists "
                             "and pass the local file")
    except Exception as e:
        raise SeplError(f"cannot read backbone weights {path}: {e}", hint="pass a torch state-dict file")
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or len(unexpected) > 2:
        raise SeplError(f"backbone weights {path} do not fit this network: {len(missing)} missing keys "
                        f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {list(unexpected)[:3]})",
                        hint="pass weights of the same architecture (e.g. resnet50 for --arch resnet50)")


def _builder(name: str) -> Callable[..., Any]:
    if name == "tiny":
        return lambda output_stride, weights, width=32: _tiny_backbone(output_stride, width)
    return lambda output_stride, weights, width=None: _resnet_backbone(name, output_stride, weights)


ARCHS = ("tiny", "resnet18", "resnet34", "resnet50", "resnet101")


def build_cam_net(
    arch: str,
    class_names: Sequence[str],
    output_stride: int = 8,
    backbone_weights: Optional[str] = None,
    width: int = 32,
) -> CAMNet:
    """Build a CAM network.

    Args:
        arch: one of ``ARCHS``; "tiny" is a small CNN for tests and CPU demos, the ResNets are
            torchvision's (ResNet-50/101 dilated with ``replace_stride_with_dilation``).
        class_names: class names, "background" first.
        output_stride: 8 or 16 (32 = plain ResNet).
        backbone_weights: optional local path of ImageNet weights; random init otherwise
            (a warning says so, since CAMs from a random backbone need far longer training).
        width: channel width of the "tiny" backbone.
    """
    if arch not in ARCHS:
        raise SeplError(f"unknown CAM architecture '{arch}'", hint=f"choose one of {', '.join(ARCHS)}")
    if arch == "tiny" and output_stride not in (8, 16):
        raise SeplError(f"the tiny backbone supports output stride 8 or 16, not {output_stride}")
    if arch == "tiny" and backbone_weights:
        raise SeplError("the tiny backbone has no pretrained weights", hint="drop --backbone-weights or pick a ResNet")
    body, feat_dim = _builder(arch)(output_stride, backbone_weights, width)
    config = dict(arch=arch, output_stride=output_stride, width=width)
    return CAMNet(body, feat_dim, class_names, config)


def model_from_checkpoint(checkpoint: Dict[str, Any], path: str = "checkpoint") -> CAMNet:
    """Rebuild a CAMNet from a checkpoint dict written by ``sepl.cam.train`` (weights included)."""
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "net" not in checkpoint:
        raise SeplError(f"{path} is not a sepl CAM checkpoint (no 'model'/'net' entries)",
                        hint="pass the checkpoint.pth written by `sepl cam train`")
    net_cfg = checkpoint["net"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # weights come from the checkpoint, not random init
        model = build_cam_net(net_cfg["arch"], net_cfg["class_names"], net_cfg["output_stride"],
                              width=net_cfg.get("width", 32))
    load_model_state(model, checkpoint["model"], path)
    return model


def load_model_state(model: CAMNet, state: Dict[str, torch.Tensor], path: str = "checkpoint") -> None:
    """``model.load_state_dict(state)`` with a SeplError that says which architecture mismatches."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0:3]
        raise SeplError(f"{path} holds weights of another architecture than {model.config} "
                        f"with {model.num_classes} classes: {' '.join(first)[:300]}",
                        hint="pass the same --arch/--output-stride/classes as the checkpoint, "
                             "or start a fresh run in another output folder")


def net_config(model: CAMNet) -> Dict[str, Any]:
    """What a checkpoint records to rebuild ``model``."""
    return dict(model.config, class_names=list(model.class_names))
