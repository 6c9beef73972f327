"""Class-agnostic masks: SAM automatic and box-prompted masks, and a classical fallback.

- ``build.build_sam(model_type, checkpoint)``: a SAM model (vit_h / vit_l / vit_b / tiny).
- ``checkpoints.resolve_checkpoint(model_type)``: find (or download) the weights.
- ``sam_auto.SamAutoMasks``: batched automatic masks (the grid-of-points pipeline).
- ``sam2_auto.HFSamAutoMasks``: the same pipeline with transformers' SAM 2 / SAM-HQ.
- ``amg.AutoMaskPipeline``: that pipeline's stages, shared by both; the model comes from hooks.
- ``sam_box.BoxPromptedSAM``: one mask per box prompt.
- ``superpixels.HierarchicalSuperpixels``: object-like regions without SAM (not SAM).

Every source returns a ``base.MaskSet`` (aligned per-mask arrays).
"""
