"""The sepl FiftyOne plugin: operators and panels, thin wrappers over the ``sepl`` library.

Every module of this folder that defines ``OPERATORS`` (operator classes) and/or ``PANELS``
is registered; each name must also be listed in ``fiftyone.yml`` or FiftyOne ignores it.
"""

import importlib
import os
import pkgutil


def _modules():
    here = os.path.dirname(__file__)
    for info in sorted(pkgutil.iter_modules([here]), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{__name__}.{info.name}")


def register(p):
    for module in _modules():
        for cls in getattr(module, "OPERATORS", []) + getattr(module, "PANELS", []):
            p.register(cls)
