"""The sepl FiftyOne plugin: operators and panels, thin wrappers over the ``sepl`` library.

Each module in ``MODULES`` defines ``OPERATORS`` (operator classes) and/or ``PANELS``; every
name must also be listed in ``fiftyone.yml`` or FiftyOne ignores it. No module imports the
library at import time, so all register where it is missing and say what to install.
"""

import importlib
import importlib.util
import logging
import os
import sys

# one module per line, so additions merge cleanly
MODULES = [
    "cam",
    "deeplab",
    "evaluate",
    "grounded",
    "masks",
    "metrics",
    "panel",
    "refine",
    "runs",
    "sam3",
    "worst",
]

logger = logging.getLogger(__name__)


def _bundled_library():
    """A plugin downloaded with ``fiftyone plugins download`` carries the library beside
    it (``<plugin>/sepl``): use that one when no ``sepl`` is installed."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if importlib.util.find_spec("sepl") is None and os.path.isfile(os.path.join(root, "sepl", "__init__.py")):
        sys.path.append(root)


def register(p):
    _bundled_library()
    for name in MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        for cls in getattr(module, "OPERATORS", []) + getattr(module, "PANELS", []):
            p.register(cls)
