"""Grad-CAM maps from a classifier the user already has (torchvision, timm, any nn.Module).

    src = GradCAM(torchvision.models.resnet50(weights=...), ["background", "cat", "dog"],
                  class_outputs=[[281, 282, 283, 284, 285], [151, 152, 153]])
    seed, heat = sepl.cam.infer.seed_from_image(src, image, present=[1])

Each dataset class maps to one or more of the classifier's outputs (their logits are summed,
e.g. all ImageNet cat breeds for "cat"). The maps come from ``target_layer`` (default: the
last module whose output is a 4-D feature map, found on the first call): Grad-CAM weights
each channel by its spatially averaged gradient, ReLU of the weighted sum.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SeplError
from .net import IMAGENET_MEAN, IMAGENET_STD


def find_last_feature_layer(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The last module (in execution order) producing an (N, D, h, w) tensor with h, w > 1."""
    last: List[nn.Module] = []
    hooks = []

    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4 and min(output.shape[2:]) > 1:
            last.append(module)

    for m in model.modules():
        if m is not model:
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    if not last:
        raise SeplError(f"{type(model).__name__} has no 4-D feature map to take a Grad-CAM from",
                        hint="pass target_layer= explicitly")
    return last[-1]


class GradCAM:
    """A CAM source (see ``sepl.cam.infer``) backed by an image classifier.

    Args:
        model: maps (N, 3, H, W) normalised images to (N, K) logits.
        class_names: dataset classes, "background" first.
        class_outputs: for each foreground class, a classifier output index or a list of them.
        target_layer: module whose output map is used; found automatically when None.
        mean, std: the classifier's input normalisation (ImageNet by default); inputs to
            ``__call__`` are RGB in [0, 1].
    """

    needs_grad = True

    def __init__(self, model: nn.Module, class_names: Sequence[str],
                 class_outputs: Sequence[Union[int, Sequence[int]]],
                 target_layer: Optional[nn.Module] = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        if len(class_outputs) != len(class_names) - 1:
            raise SeplError(f"{len(class_outputs)} class_outputs for {len(class_names) - 1} foreground classes",
                            hint="give one classifier output (or list of outputs) per class after 'background'")
        self.model = model.eval()
        self.class_names = list(class_names)
        self.class_outputs = [[o] if isinstance(o, int) else list(o) for o in class_outputs]
        self.target_layer = target_layer
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.config = dict(kind="gradcam", model=type(model).__name__, class_outputs=self.class_outputs)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, H, W) RGB in [0, 1] -> (N, C, h, w) Grad-CAMs (>= 0) of the C classes."""
        dev = next(self.model.parameters()).device
        x = ((x.to(dev) - self.mean.to(dev)) / self.std.to(dev)).detach()
        if self.target_layer is None:
            self.target_layer = find_last_feature_layer(self.model, x[:1])
        store = {}

        def hook(module, inputs, output):
            output.retain_grad()
            store["a"] = output

        handle = self.target_layer.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                logits = self.model(x)
                if logits.dim() != 2:
                    raise SeplError(f"the classifier returned shape {tuple(logits.shape)}, expected (N, K)")
                k = logits.shape[1]
                bad = [o for outs in self.class_outputs for o in outs if not 0 <= o < k]
                if bad:
                    raise SeplError(f"class outputs {bad} are outside the classifier's {k} outputs")
                maps = []
                for outs in self.class_outputs:
                    a = store["a"]
                    grad = torch.autograd.grad(logits[:, outs].sum(), a, retain_graph=True)[0]
                    w = grad.mean(dim=(2, 3), keepdim=True)
                    maps.append(F.relu((w * a).sum(1)))
        finally:
            handle.remove()
        return torch.stack(maps, 1).detach()
