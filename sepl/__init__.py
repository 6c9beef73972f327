"""sepl: SAM-enhanced pseudo-labels for weakly supervised semantic segmentation.

The algorithm modules (``sepl.merge``, ``sepl.metrics``, ...) take and return numpy
arrays and never import FiftyOne; ``sepl.fo`` is the one layer that converts FiftyOne
samples and labels. Heavy dependencies (torch, fiftyone) are imported lazily.
"""

__version__ = "0.1.0"

from .errors import SeplError  # noqa: F401


def __getattr__(name):
    # FiftyOne-backed names load on first use, so `import sepl` stays light
    if name == "SEPLModel":
        from .fo.model import SEPLModel

        return SEPLModel
    raise AttributeError(f"module 'sepl' has no attribute '{name}'")
