"""One sample of ``sepl.fo.refine`` on FiftyOne-format documents, without FiftyOne.

``RefineJob(...)(row)`` decodes the seed and the instance masks of one row (see
``sepl.fo._fill``), runs ``sepl.merge.merge`` and returns the documents to store: the
merged ``fo.Segmentation`` and, optionally, the decisions ``fo.Detections`` (a copy of the
mask documents, bytes untouched, labelled with the class each mask was taken for).
A job is a picklable value, so the same rows give the same documents on any worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..classes import IGNORE_INDEX
from ..errors import SeplError
from . import raw
from .rows import row_shape


def check_seed(seed: np.ndarray, num_classes: int, field: str) -> None:
    """SeplError when the (H, W) uint8 ``seed`` holds classes outside its ``num_classes`` targets (255 allowed)."""
    high = seed >= num_classes  # a mask + unique of the few values above: 0.77 -> ~0.05 ms on a VOC seed
    bad = [int(v) for v in np.unique(seed[high]) if v != IGNORE_INDEX] if high.any() else []
    if bad:
        raise SeplError(f"seed '{field}' holds classes {bad[:10]} that are not in its "
                        f"{num_classes} mask targets", hint="fix the seeds or the field's mask targets")


def stored_crops(mdoc: Optional[dict], field: str, shape: Tuple[int, int]):
    """The instance masks of a stored ``fo.Detections`` document as ``sepl.cropped.CroppedMasks``
    (boxes + crops, as FiftyOne stores them): the merge reads only the boxes, never full planes."""
    from ..cropped import CroppedMasks

    boxes, crops = raw.instance_crops(mdoc, field, *shape)
    boxes = boxes.copy()
    out = []
    for k, crop in enumerate(crops):
        x0, y0, x1, y1 = (int(v) for v in boxes[k])
        if x1 <= x0 or y1 <= y0:  # a box with no pixels: an empty mask
            boxes[k] = 0
            out.append(np.zeros((0, 0), bool))
        else:
            out.append(np.ones((y1 - y0, x1 - x0), bool) if crop is None else crop)
    return CroppedMasks(shape, boxes, out)


@dataclass(frozen=True)
class RefineJob:
    """What refine does per sample (all fields plain values, so a job pickles)."""

    seed_field: str
    masks_field: str
    out_field: str
    decisions_field: Optional[str]
    targets: Tuple[Tuple[int, str], ...]
    mode: str = "paper"
    os_thresh: float = 0.5
    op_thresh: float = 0.85
    keep_ignore: bool = False
    allow_empty: bool = False
    disk_dir: Optional[str] = None  # label maps as PNGs here (storage "disk"), else in the database

    def __call__(self, row: Dict[str, Any]) -> Dict[str, Any]:
        from ..merge import merge

        fields = row["fields"]
        shape = row_shape(row)
        seed = raw.label_map(fields.get(self.seed_field), self.seed_field, shape)
        n = len(self.targets)
        check_seed(seed, n, self.seed_field)
        mdoc = fields.get(self.masks_field)
        masks = stored_crops(mdoc, self.masks_field, shape)
        res = merge(seed, masks, mode=self.mode, num_classes=n, ignore_index=IGNORE_INDEX,
                    keep_ignore=self.keep_ignore, os_thresh=self.os_thresh, op_thresh=self.op_thresh,
                    allow_empty=self.allow_empty)
        labels = np.asarray(res.labels, dtype=np.uint8)
        if self.disk_dir is not None:
            from ..labelio import write_label

            path = os.path.join(self.disk_dir, f"{row['id']}.png")
            write_label(path, labels, palette=False)
            out: Dict[str, Any] = {self.out_field: raw.segmentation_doc(mask_path=path)}
        else:
            out = {self.out_field: raw.segmentation_doc(labels)}
        if self.decisions_field:
            out[self.decisions_field] = self.decisions(mdoc, res.records)
        return out

    def decisions(self, mdoc: Dict[str, Any], rec: Dict[str, Any]) -> Dict[str, Any]:
        """The mask documents, each labelled with its class (or why it was not taken)."""
        names = dict(self.targets)
        dets = []
        for k, src in enumerate(mdoc.get("detections") or []):
            d = dict(src)  # masks stay the stored bytes: nothing re-encoded
            cid = int(rec["class_id"][k])
            selected = bool(rec["selected"][k])
            d["label"] = names.get(cid, str(cid)) if selected and cid >= 0 else str(rec["reason"][k])
            d["selected"] = selected
            d["class_id"] = cid
            d["class_name"] = names.get(cid, str(cid)) if cid >= 0 else None  # a rejected mask names its class
            d["o_s"] = float(rec["o_s"][k])
            d["o_p"] = float(rec["o_p"][k])
            d["reason"] = str(rec["reason"][k])
            d["source_id"] = str(src.get("_id"))
            dets.append(d)
        return {"_cls": "Detections", "detections": dets}
