"""DeepLabV3 training on label maps, in the style of torchvision's ``references/segmentation``.

Modules: ``config`` (the run's settings, no torch), ``transforms`` (paired image/mask
augmentation), ``data`` (a VOC-layout folder as a torch dataset), ``models`` (a registry of
DeepLabV3 builders), ``train`` (``train(config)`` / ``main(args)``), ``predict`` (whole-image
and sliding-window inference from a checkpoint), ``logs`` (metrics log and plots).
Importing this package does not import torch.
"""

from .config import TrainConfig  # noqa: F401
