"""The one layer that converts between FiftyOne samples/labels and the arrays ``sepl`` works on.

Nothing outside ``sepl.fo`` (and the ``plugin/`` operators that call it) imports FiftyOne.
Modules: ``db`` (database checks), ``convert`` (labels <-> arrays), ``samples`` (iterating a
view with progress, resume and safe writes), plus one module per feature.
"""


# The Python API: ``sepl.fo.refine(view, ...)``, ``sepl.fo.evaluate(view, ...)``. Bound
# eagerly because the functions share their modules' names (a lazy ``__getattr__`` would
# be shadowed by the submodule once imported); this package is the FiftyOne layer anyway.
from .evaluate import evaluate  # noqa: E402,F401
from .refine import refine  # noqa: E402,F401
from .views import worst_samples  # noqa: E402,F401
from .sam3 import sam3_pseudo_labels  # noqa: E402,F401
