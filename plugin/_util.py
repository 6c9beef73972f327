"""Form and execution helpers shared by the operators (no algorithm logic here)."""

import fiftyone.operators.types as types


def target_view(ctx):
    """The view an operator acts on: the selection, else the current view, else the dataset."""
    target = ctx.params.get("target", "CURRENT_VIEW")
    if target == "SELECTED_SAMPLES" and ctx.selected:
        return ctx.view.select(ctx.selected)
    if target == "DATASET":
        return ctx.dataset
    return ctx.view


def add_target_input(ctx, inputs):
    """Radio group to pick dataset / current view / selected samples."""
    choices = types.RadioGroup()
    choices.add_choice("DATASET", label="Entire dataset")
    choices.add_choice("CURRENT_VIEW", label="Current view")
    default = "CURRENT_VIEW"
    if ctx.selected:
        choices.add_choice("SELECTED_SAMPLES", label="Selected samples")
        default = "SELECTED_SAMPLES"
    inputs.enum("target", choices.values(), default=default, view=choices, label="Apply to")


def field_names(dataset, embedded_doc_type):
    """Names of top-level sample fields holding ``embedded_doc_type`` labels."""
    schema = dataset.get_field_schema(embedded_doc_type=embedded_doc_type)
    return sorted(schema.keys())


def progress_trigger(ctx, fraction, label):
    """Report progress the way FiftyOne expects for immediate and delegated runs."""
    if ctx.delegated:
        ctx.set_progress(progress=fraction, label=label)
        return None
    return ctx.trigger("set_progress", dict(progress=fraction, label=label))


class FormParams(dict):
    """``ctx.params`` whose missing entries raise a message instead of a bare KeyError: a
    form whose prerequisites are missing shows a warning, but can still be executed."""

    def __missing__(self, key):
        from sepl.errors import SeplError

        raise SeplError(f"the operator's form has no value for '{key}'",
                        hint="open the form in the App and fill it in; a warning there says what the dataset lacks")


def form_params(ctx) -> FormParams:
    return FormParams(ctx.params or {})
