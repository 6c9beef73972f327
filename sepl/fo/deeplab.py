"""DeepLab on FiftyOne: train from a view's label field, write predictions back as a field.

    from sepl.fo.deeplab import train_from_view, predict_to_field
    res = train_from_view(view, "sepl_labels", "runs/r101", model="deeplabv3_resnet101",
                          val_fraction=0.1, backbone_weights="resnet101-63fe2227.pth")
    predict_to_field(dataset, res["best_checkpoint"], "deeplab")   # or:
    dataset.apply_model(DeepLabModel.from_checkpoint(res["best_checkpoint"]), "deeplab")

so the App shows pseudo-labels, DeepLab's predictions and the ground truth side by side.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import fiftyone as fo

from ._models import LoaderModel
from ..errors import SeplError
from .convert import set_mask_targets
from .export import export_segmentation, read_manifest
from . import runs
from .runs import start_run

Progress = Callable[[float, str], None]


class DeepLabModel(LoaderModel):
    """A trained sepl DeepLab as a FiftyOne model: ``dataset.apply_model(model, "field")``
    stores an ``fo.Segmentation`` (uint8 class indices) per image.

    Args:
        predictor: a :class:`sepl.deeplab.predict.Predictor`.
    """

    def __init__(self, predictor, checkpoint: Optional[str] = None):
        self.predictor = predictor
        self.checkpoint = checkpoint

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: Optional[str] = None, mode: str = "whole",
                        crop_size: Optional[int] = None) -> "DeepLabModel":
        from ..deeplab.predict import Predictor

        return cls(Predictor.from_checkpoint(path, device=device, mode=mode, crop_size=crop_size),
                   checkpoint=str(Path(path).resolve()))

    @property
    def classes(self):
        return self.predictor.classes

    @property
    def mask_targets(self) -> Dict[int, str]:
        return dict(enumerate(self.predictor.classes))

    def run_params(self):
        p = self.predictor
        return {"checkpoint": self.checkpoint, "mode": p.mode, "crop_size": p.crop_size, "classes": list(p.classes)}

    def on_done(self, dataset, label_field):
        set_mask_targets(dataset, label_field, self.mask_targets)

    def predict(self, arg) -> fo.Segmentation:
        """``arg``: (H, W, 3) uint8 RGB image (FiftyOne's loader gives RGB)."""
        return fo.Segmentation(mask=self.predictor.predict(arg))

    def predict_all(self, args):
        return [self.predict(a) for a in args]


@runs.recorded
def predict_to_field(
    view,
    checkpoint: str | os.PathLike,
    field: str,
    mode: str = "whole",
    crop_size: Optional[int] = None,
    device: Optional[str] = None,
    overwrite: bool = False,
    output_dir: Optional[str] = None,
) -> Dict[str, Any]:
    """Write the predictions of ``checkpoint`` on ``view`` to ``field`` (``fo.Segmentation``).

    Rerunning with the same parameters resumes (only samples still without ``field`` are
    predicted); an existing field made otherwise is kept unless ``overwrite``. The field's
    mask targets are set to the checkpoint's classes. ``output_dir`` stores the masks as
    PNGs there instead of in the database. Samples that cannot be predicted (unreadable
    image) are named in a SeplError raised after the others were stored.
    """
    if len(view) == 0:
        raise SeplError("the view to predict on is empty", hint="pick a view or dataset that has samples")
    runs.check_file("DeepLab checkpoint", checkpoint)
    model = DeepLabModel.from_checkpoint(checkpoint, device=device, mode=mode, crop_size=crop_size)
    model.record_run = False  # recorded here, as "deeplab_predict", so that a rerun resumes
    dataset = view._dataset
    params = dict(checkpoint=str(Path(checkpoint).resolve()), mode=mode, crop_size=crop_size)
    run = start_run(dataset, field, "deeplab_predict", params, overwrite=overwrite, view=view)
    todo = run.pending
    from ..labelio import read_image
    from ._fill import fill_field, raise_failures
    from .convert import to_segmentation

    def compute(sample, image):
        path = os.path.join(output_dir, f"{sample.id}.png") if output_dir else None
        return to_segmentation(model.predictor.predict(image), path)

    # only the default fields are read; loader threads decode the chunk's images while the
    # model runs; each chunk is stored with one bulk write
    done, failures = fill_field(todo, field, compute, what="predictions", fields=[],
                                load=lambda s: read_image(s.filepath), claim=run.claim)
    set_mask_targets(dataset, field, model.mask_targets)
    raise_failures(failures, field, done)
    return {"field": field, "predicted": done, "resumed": run.resumed}


def train_from_view(
    view,
    label_field: str,
    out_dir: str | os.PathLike,
    val_fraction: float = 0.1,
    split_tags: Optional[Sequence[str]] = None,
    seed: int = 0,
    predict_field: Optional[str] = None,
    progress: Optional[Progress] = None,
    verbose: bool = True,
    **config: Any,
) -> Dict[str, Any]:
    """Export ``view``'s ``label_field`` to ``out_dir/data`` (VOC layout), train DeepLab in
    ``out_dir`` and, with ``predict_field``, write the best model's predictions on ``view``.

    ``config`` holds :class:`sepl.deeplab.config.TrainConfig` fields (``model``, ``epochs``,
    ``batch_size``, ``crop_size``, ``lr``, ``backbone_weights``, ``resume``, ``overwrite``, ...).
    With ``resume`` the earlier export in ``out_dir/data`` is reused as it is.
    Returns the training summary (``best_miou``, ``checkpoint``, ...), plus ``export`` and
    ``predictions`` entries.
    """
    from ..deeplab.config import TrainConfig
    from ..deeplab.train import train

    out_dir = Path(out_dir).expanduser().resolve()
    data_dir = out_dir / "data"
    resume = bool(config.get("resume"))

    def part(lo: float, hi: float) -> Optional[Progress]:
        if progress is None:
            return None
        return lambda f, msg: progress(lo + (hi - lo) * f, msg)

    if resume and read_manifest(data_dir) is not None:
        export = {"out_dir": str(data_dir), "reused": True}
    else:
        # an earlier export that no training used yet (e.g. the run failed on its settings) is ours
        # to replace; one beside a checkpoint is kept unless overwrite
        stale = read_manifest(data_dir) is not None and not (out_dir / "checkpoint.pth").exists()
        res = export_segmentation(view, label_field, data_dir, format="voc", val_fraction=val_fraction,
                                  split_tags=split_tags, seed=seed,
                                  overwrite=bool(config.get("overwrite")) or stale, progress=part(0.0, 0.05))
        export = {"out_dir": str(res.out_dir), "splits": {k: len(v) for k, v in res.splits.items()},
                  "skipped": res.skipped, "reused": False}
    train_split = "train"
    if split_tags:  # the first tag names the training list, the second the validation list
        train_split = split_tags[0]
        config.setdefault("val_split", split_tags[1] if len(split_tags) > 1 else None)
    cfg = TrainConfig(data_dir=str(data_dir), out_dir=str(out_dir), train_split=train_split, seed=seed, **config)
    summary = train(cfg, progress=part(0.05, 0.95 if predict_field else 1.0), verbose=verbose)
    summary["export"] = export
    if predict_field:
        if progress is not None:
            progress(0.95, f"writing predictions to '{predict_field}'")
        summary["predictions"] = predict_to_field(view, summary["best_checkpoint"], predict_field,
                                                  mode=cfg.eval_mode, crop_size=cfg.crop_size,
                                                  device=cfg.device, overwrite=bool(config.get("overwrite")))
    if progress is not None:
        best = summary.get("best_miou")
        progress(1.0, "done" + (f": best validation mIoU {100 * best:.2f}" if best is not None else ""))
    return summary
