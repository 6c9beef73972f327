"""The data-loader item of sepl's FiftyOne models (imports torch: load it only when needed)."""

import fiftyone.utils.torch as fout


class ImageGetItem(fout.GetItem):
    """Loads ``d["filepath"]`` as an (H, W, 3) uint8 RGB array (``sepl.labelio.read_image``)."""

    def __call__(self, d):
        from ..labelio import read_image

        return read_image(d["filepath"])

    @property
    def required_keys(self):
        return ["filepath"]
