"""What every sepl FiftyOne model shares (``dataset.apply_model`` protocol)."""

import fiftyone.core.models as fom


class ImageModel(fom.Model):
    """Base of sepl's FiftyOne models: images arrive as (H, W, 3) uint8 RGB arrays, with no
    torch transforms and no FiftyOne preprocessing; batches may mix image sizes unless a
    subclass sets ``ragged = False``."""

    ragged = True

    @property
    def media_type(self):
        return "image"

    @property
    def ragged_batches(self):
        return self.ragged

    @property
    def transforms(self):
        return None

    @property
    def preprocess(self):
        return False

    @preprocess.setter
    def preprocess(self, value):
        pass  # the arrays are used as loaded
