"""CAM dicts saved by WSSS methods (IRN/AMN, SEAM) -> seed label maps (no FiftyOne).

The rule itself is ``sepl.cam.seeds.cams_to_seed`` (the one sepl's own CAM seeds use);
this module only reads the dict layouts and resizes.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import SeplError


def cam_to_label(
    cam_dict,
    shape: Optional[tuple] = None,
    bg_threshold: Optional[float] = None,
    bg_power: Optional[float] = None,
) -> np.ndarray:
    """Turn an IRN/AMN-style CAM dict into an (H, W) uint8 label map.

    ``cam_dict`` holds ``keys`` (0-based foreground class indices, i.e. class ``k+1``)
    and ``high_res`` (K, H, W) or ``cam`` (K, h, w, upsampled bilinearly to ``shape``),
    per-class normalised to [0, 1] (values outside are clipped); a SEAM-style
    ``{class index: (H, W)}`` dict is accepted too. Background is the constant
    ``bg_threshold`` (e.g. 0.26), or ``(1 - max cam) ** bg_power``. Exactly one of the two
    must be given. Ties go to the class listed first.
    """
    from ..cam.seeds import cams_to_seed

    if (bg_threshold is None) == (bg_power is None):
        raise SeplError("give either a background threshold or a background power",
                        hint="e.g. --bg-threshold 0.26 (IRN/AMN) or --bg-power 3")
    if isinstance(cam_dict, np.ndarray) and cam_dict.dtype == object:
        cam_dict = cam_dict.item()
    if not isinstance(cam_dict, dict):
        raise SeplError(f"CAM file holds a {type(cam_dict).__name__}, not a dict",
                        hint="expected np.save(path, {'keys': ..., 'high_res': ...})")
    if "keys" in cam_dict:
        keys = np.asarray(cam_dict["keys"], dtype=np.int64)
        cams = cam_dict.get("high_res", cam_dict.get("cam"))
        if cams is None:
            raise SeplError("CAM dict has 'keys' but neither 'high_res' nor 'cam'")
        if hasattr(cams, "numpy"):
            cams = cams.detach().cpu().numpy() if hasattr(cams, "detach") else cams.numpy()
        cams = np.asarray(cams, dtype=np.float32)
    else:
        keys = np.asarray(sorted(int(k) for k in cam_dict), dtype=np.int64)
        cams = np.stack([np.asarray(cam_dict[k], np.float32) for k in sorted(cam_dict, key=int)]) \
            if len(keys) else np.zeros((0,) + tuple(shape or (1, 1)), np.float32)
    if cams.ndim != 3 or len(keys) != len(cams):
        raise SeplError(f"CAM array of shape {cams.shape} does not match {len(keys)} keys")
    if shape is not None and cams.shape[1:] != tuple(shape):
        if "high_res" in cam_dict:
            raise SeplError(f"high_res CAMs are {cams.shape[2]}x{cams.shape[1]} but the image is "
                            f"{shape[1]}x{shape[0]}", hint="recompute the CAMs for this image")
        import cv2

        cams = np.stack([cv2.resize(c, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) for c in cams]) \
            if len(cams) else np.zeros((0,) + tuple(shape), np.float32)
    if not len(cams):
        return np.zeros(tuple(shape) if shape is not None else cams.shape[1:], np.uint8)
    # the K listed classes compete as 1..K (in the file's order), then map to their indices
    local = cams_to_seed(np.clip(cams, 0, 1), range(1, len(keys) + 1),
                         bg_mode="threshold" if bg_threshold is not None else "power",
                         threshold=bg_threshold or 0.0, alpha=bg_power or 1.0, normalized=True)
    lut = np.concatenate([[0], keys + 1]).astype(np.uint8)
    return lut[local]
