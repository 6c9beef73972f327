"""Form and execution helpers shared by the operators (no algorithm logic here).

Nothing in this module imports the ``sepl`` library at import time: every operator must
register (and say what to install when run) even where the library or its dependencies
are missing.
"""

import functools

import fiftyone.operators.types as types

INSTALL_HINT = ("install the plugin's requirements: `fiftyone plugins requirements @sepl/sepl --install` "
                "(or `pip install -e .` in the plugin's folder)")


@functools.lru_cache(maxsize=1)
def library_problem():
    """None when the ``sepl`` library and its core dependencies import, else why not."""
    try:
        import sepl.fo  # noqa: F401  (FiftyOne glue: numpy, OpenCV, scikit-image, ...)
        import sepl.merge  # noqa: F401
    except ImportError as e:
        return f"the sepl library cannot be imported ({e})"
    return None


def require_library():
    """Raise an ImportError saying what to install when the library is missing."""
    problem = library_problem()
    if problem:
        raise ImportError(f"{problem}: {INSTALL_HINT}")


def library_warning(inputs) -> bool:
    """Add a form warning when the library is missing; True when it is."""
    problem = library_problem()
    if problem:
        inputs.view("missing_library", types.Error(label="The sepl library is not installed",
                                                   description=f"{problem}. {INSTALL_HINT}"))
    return problem is not None


def add_target_input(ctx, inputs, action="Process"):
    """FiftyOne's own target choice: dataset / current view / selected samples (base view
    for patches or frames views). ``ctx.target_view()`` resolves it in ``execute``."""
    return inputs.view_target(ctx, action_description=action)


def target_view(ctx):
    """The samples the operator acts on (the ``view_target`` choice)."""
    return ctx.target_view()


def field_names(dataset, embedded_doc_type):
    """Names of top-level sample fields holding ``embedded_doc_type`` labels."""
    schema = dataset.get_field_schema(embedded_doc_type=embedded_doc_type)
    return sorted(schema.keys())


class FormParams(dict):
    """``ctx.params`` whose missing entries raise a message instead of a bare KeyError: a
    form whose prerequisites are missing shows a warning, but can still be executed."""

    def __missing__(self, key):
        raise ValueError(f"the operator's form has no value for '{key}': open the form in the App and fill it "
                         "in; a warning there says what the dataset lacks")


def form_params(ctx) -> FormParams:
    return FormParams(ctx.params or {})


def pct(value) -> str:
    """A fraction as the one text convention of the plugin: percent, one decimal."""
    if value is None or value != value:
        return "-"
    return f"{100 * float(value):.1f}"


def pseudo_label_result(title: str, field: str, summary: dict, background: int, none_of: str,
                        counts: dict, counts_line: str) -> dict:
    """The operator result of a tags-to-labels run (Grounded-SAM, SAM 3) from its summary:
    the figures plus a Markdown ``summary`` (``counts_line`` is its line of the run's own counts)."""
    res = {"processed": summary["samples"], "resumed": summary["resumed"], "all_background": background, **counts}
    if "failed" in summary:
        res["failed"] = "\n".join(summary["failed"])
    res["warnings"] = "\n".join(f"{s}: {w}" for s, w in summary["warnings"][:50])
    res["summary"] = (f"**{title} wrote `{field}`**\n\n"
                      f"- samples labelled: **{res['processed']}**"
                      + (" (resumed an earlier run)" if res["resumed"] else "") + "\n"
                      f"- left all background (no tags or no {none_of}): **{background}**\n"
                      f"- {counts_line}"
                      + (f"\n\n**Failed** (a rerun retries them):\n\n{res['failed']}" if res.get("failed") else "")
                      + (f"\n\n**Warnings** (first 50):\n\n{res['warnings']}" if res["warnings"] else ""))
    return res
