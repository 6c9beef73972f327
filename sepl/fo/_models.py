"""What every sepl FiftyOne model shares (``dataset.apply_model`` protocol).

- Batches: ``predict_all`` takes a list of images of any sizes, so ``ragged_batches`` is
  False (in FiftyOne, True means "cannot batch": ``apply_model`` then drops ``batch_size``).
- Data loading (``LoaderModel``): models whose work is image inference load images in
  FiftyOne's torch data loader (``SupportsGetItem`` + ``TorchModelMixin``, as FiftyOne's own
  SAM model does), so ``apply_model(..., num_workers=N)`` decodes images in N worker
  processes; the batch reaches ``predict_all`` as a list of (H, W, 3) uint8 RGB arrays,
  read as ``sepl``'s own commands read them (``sepl.labelio.read_image``).
- Run records: like the ``sepl.fo`` functions, ``apply_model`` with a sepl model records the
  run that made the field (``sepl.fo.runs``, key ``sepl_<label_field>``, method
  ``apply_model:<model class>``, the model's parameters). FiftyOne does not tell a model
  where its labels go, so the model reads ``samples`` and ``label_field`` from the
  ``fiftyone.core.models.apply_model`` call it runs under (tested against FiftyOne 1.22);
  outside such a call nothing is recorded.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Dict, List, Optional, Tuple

import fiftyone.core.models as fom

from ..errors import SeplError

log = logging.getLogger(__name__)


class ImageModel(fom.Model):
    """Base of sepl's FiftyOne models: images arrive as (H, W, 3) uint8 RGB arrays, with no
    torch transforms and no FiftyOne preprocessing; a batch may mix image sizes.

    Subclasses name their run: ``run_params()`` (JSON-serialisable) and ``output_keys``
    (the keys of a dict prediction: FiftyOne stores key ``k`` in ``<label_field>_<k>``).
    """

    output_keys: Tuple[str, ...] = ()
    record_run = True  # sepl's own functions, which record their runs, turn this off
    _run = None

    @property
    def media_type(self):
        return "image"

    @property
    def ragged_batches(self):
        return False  # predict_all takes lists of differently sized arrays

    @property
    def transforms(self):
        return None

    @property
    def preprocess(self):
        return False

    @preprocess.setter
    def preprocess(self, value):
        pass  # the arrays are used as loaded

    def run_params(self) -> Dict[str, Any]:
        return {}

    def on_done(self, dataset, label_field: str) -> None:
        """Called after a successful ``apply_model`` (e.g. to set the field's mask targets)."""

    def __enter__(self):
        self._run = record_apply_model_run(self) if self.record_run else None
        return self

    def __exit__(self, exc_type, *args):
        run, self._run = self._run, None
        if run is not None:
            if exc_type is not None:
                forget_empty_run(*run)
            else:
                self.on_done(run[0], run[3])
        return False


class LoaderModel(ImageModel, fom.SupportsGetItem, fom.TorchModelMixin):
    """An ``ImageModel`` fed by FiftyOne's torch data loader: ``apply_model(...,
    batch_size=B, num_workers=N)`` (``num_workers`` needs torch, as for FiftyOne's models)."""

    def build_get_item(self, field_mapping=None):
        from ._getitem import ImageGetItem

        return ImageGetItem(field_mapping=field_mapping)

    @property
    def has_collate_fn(self):
        return True

    @staticmethod
    def collate_fn(batch):
        return list(batch)  # images of different sizes stay a list


def _apply_model_call() -> Tuple[Any, Optional[str]]:
    """(samples, label_field) of the ``fiftyone.core.models.apply_model`` call on the stack."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            if frame.f_code.co_name == "apply_model" and frame.f_globals.get("__name__") == fom.__name__:
                return frame.f_locals.get("samples"), frame.f_locals.get("label_field")
            frame = frame.f_back
        return None, None
    finally:
        del frame


def record_apply_model_run(model: ImageModel) -> Optional[Tuple[Any, str, bool, str]]:
    """Record the run of ``model`` under the ``apply_model`` call it is entered by.

    Returns (dataset, recorded field, whether it is new, label_field) or None when no
    ``apply_model`` call (or a frame/video one) is found. ``apply_model`` replaces labels by
    design, so an existing field made otherwise gets a new record instead of a refusal.
    """
    from .runs import run_key, start_run

    samples, label_field = _apply_model_call()
    if samples is None or not isinstance(label_field, str) or "." in label_field:
        return None
    dataset = samples._dataset
    fields = [f"{label_field}_{k}" for k in model.output_keys] or [label_field]
    new = not any(dataset.has_field(f) for f in fields)
    params = dict(model.run_params(), label_field=label_field)
    method = f"apply_model:{type(model).__name__}"
    try:
        run = start_run(dataset, fields[0], method, params, extra_fields=fields[1:], shared=False)
        run.commit()  # FiftyOne writes the field: record the run now, keep it while the field fills
        run.finish(keep=True)
    except SeplError:
        if dataset.has_run(run_key(fields[0])):
            dataset.delete_run(run_key(fields[0]))
        config = dataset.init_run(**dict(params, method=method, fields=fields))
        dataset.register_run(run_key(fields[0]), config)
    return dataset, fields[0], new, label_field


def forget_empty_run(dataset, field: str, new: bool, label_field: str = "") -> None:
    """After a failed ``apply_model``: a field it created and left empty goes, with its record."""
    from .runs import run_key

    try:
        if not new or (dataset.has_field(field) and len(dataset.exists(field))):
            return
        key = run_key(field)
        fields: List[str] = [field]
        if dataset.has_run(key):
            fields = dataset.get_run_info(key).config.serialize().get("fields", fields)
            dataset.delete_run(key)
        for f in fields:
            if dataset.has_field(f) and not len(dataset.exists(f)):
                dataset.delete_sample_field(f)
    except Exception as e:  # never mask the error that stopped the run
        log.warning("could not remove the empty run of '%s': %s", field, e)
