"""``SEPLModel``: the SEPL merge as a FiftyOne model, for ``apply_model``.

    dataset.apply_model(sepl.SEPLModel(mode="paper"), label_field="sepl",
                        seed_field="seeds", masks_field="sam_masks")

FiftyOne passes the extra keyword arguments as the model's ``needs_fields``, hands each
sample to ``predict`` and stores the returned ``fo.Segmentation`` in ``label_field``.
``sepl.fo.refine`` does the same with run records, resume and per-mask decisions; the
model is for users who already drive inference through ``apply_model``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Optional

import fiftyone.core.models as fom

from ._models import ImageModel
from ..errors import SeplError
from .convert import get_mask_targets, set_mask_targets
from .refine import RefineConfig, refine_sample


class SEPLModel(ImageModel, fom.SamplesMixin):
    """Refines a seed ``fo.Segmentation`` with class-agnostic mask ``fo.Detections``.

    Args:
        mode, os_thresh, op_thresh, keep_ignore, allow_empty: see ``sepl.merge.merge``.
        seed_field, masks_field: defaults for the fields, overridden by the
            ``seed_field=``/``masks_field=`` arguments of ``apply_model``.

    Without both fields (here or in ``apply_model``) the run stops before the first sample
    with an error saying so. The output field gets the seed field's mask targets, and the
    run is recorded (method ``apply_model:SEPLModel``).
    """

    _FIELDS = ("seed_field", "masks_field")

    def __init__(self, mode: str = "paper", os_thresh: float = 0.5, op_thresh: float = 0.85,
                 keep_ignore: bool = False, allow_empty: bool = False, seed_field: Optional[str] = None,
                 masks_field: Optional[str] = None):
        fom.SamplesMixin.__init__(self)
        self.config = RefineConfig(mode=mode, os_thresh=os_thresh, op_thresh=op_thresh, keep_ignore=keep_ignore,
                                   allow_empty=allow_empty)
        self._defaults = {k: v for k, v in (("seed_field", seed_field), ("masks_field", masks_field)) if v}
        self.needs_fields = {}

    @property
    def needs_fields(self):
        return self._fields

    @needs_fields.setter
    def needs_fields(self, fields):
        # apply_model sets its keyword arguments here ({} when none): they override the
        # constructor's fields instead of erasing them
        self._fields = dict(self._defaults, **(fields or {}))

    def _field(self, name: str) -> str:
        field = self.needs_fields.get(name)
        if not field:
            raise SeplError(f"SEPLModel needs {name}",
                            hint=f"pass {name}=... to apply_model or to SEPLModel(...)")
        return field

    def __enter__(self):
        missing = [k for k in self._FIELDS if not self.needs_fields.get(k)]
        unknown = [k for k in self.needs_fields if k not in self._FIELDS]
        if missing or unknown:
            raise SeplError(f"SEPLModel needs {' and '.join(missing) or 'only seed_field and masks_field'}"
                            + (f" (unknown arguments: {unknown})" if unknown else ""),
                            hint="pass seed_field=... and masks_field=... to apply_model or to SEPLModel(...)")
        return super().__enter__()

    def run_params(self):
        return dict(asdict(self.config), seed_field=self.needs_fields.get("seed_field"),
                    masks_field=self.needs_fields.get("masks_field"))

    def on_done(self, dataset, label_field):
        targets = get_mask_targets(dataset, self._field("seed_field"))
        if targets:
            set_mask_targets(dataset, label_field, targets)

    def predict(self, arg, sample=None):
        """``arg``: the (H, W, 3) uint8 image (unused: the merge works on labels); returns
        an ``fo.Segmentation`` with the merged (H, W) uint8 label map."""
        import fiftyone as fo

        if sample is None:
            raise SeplError("SEPLModel needs the sample", hint="run it through dataset.apply_model")
        seed_field, masks_field = self._field("seed_field"), self._field("masks_field")
        targets = get_mask_targets(sample._dataset, seed_field)
        if not targets:
            raise SeplError(f"seed field '{seed_field}' has no mask targets",
                            hint="set dataset.mask_targets for it (the importers do)")
        labels = refine_sample(sample, seed_field, masks_field, self.config, targets)
        return fo.Segmentation(mask=labels)

    def predict_all(self, args, samples=None):
        return [self.predict(a, sample=s) for a, s in zip(args, samples or [None] * len(args))]
