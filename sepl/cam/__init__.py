"""CAM seeds from image-level labels.

- ``net``: the CAM classifier (a backbone + 1x1 classifier head; builders in ``ARCHS``);
- ``losses``: GAP BCE, HFPL's importance-sampling and feature-similarity losses;
- ``train``: the training loop (torchvision-references style, checkpoint + resume);
- ``infer``: multi-scale + flip CAMs and CAM -> seed label maps;
- ``gradcam``: Grad-CAM maps from any torchvision/timm classifier, for users who do not train.

Everything here works on numpy arrays / torch tensors; FiftyOne glue is in ``sepl.fo.cam``.
"""
