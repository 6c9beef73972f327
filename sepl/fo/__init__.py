"""The one layer that converts between FiftyOne samples/labels and the arrays ``sepl`` works on.

Nothing outside ``sepl.fo`` (and the ``plugin/`` operators that call it) imports FiftyOne.
Modules: ``db`` (database checks), ``convert`` (labels <-> arrays), ``samples`` (iterating a
view with progress, resume and safe writes), plus one module per feature.
"""
