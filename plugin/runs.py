"""Operator "Delete a sepl run": the run record of a produced field, and its fields."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._util import form_params, library_warning, require_library


class DeleteSeplRun(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="delete_sepl_run",
            label="Delete a sepl run",
            description="Delete the record of the run that produced a field and, by default, its fields",
            icon="delete",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if library_warning(inputs):
            return types.Property(inputs)
        keys = [k for k in ctx.dataset.list_runs() if k.startswith("sepl_")]
        if not keys:
            inputs.view("none", types.Warning(label="This dataset has no sepl runs"))
            return types.Property(inputs)
        fields = []
        for k in keys:
            fields.extend(ctx.dataset.get_run_info(k).config.serialize().get("fields", [])[:1])
        inputs.enum("field", fields, required=True, label="Field produced by the run")
        inputs.bool("delete_fields", default=True, label="Also delete the fields it made")
        return types.Property(inputs, view=types.View(label="Delete a sepl run"))

    def execute(self, ctx):
        require_library()
        from sepl.fo import runs

        p = form_params(ctx)
        runs.delete_run(ctx.dataset, p["field"], p.get("delete_fields", True))
        ctx.trigger("reload_dataset")
        return {"deleted": p["field"]}


OPERATORS = [DeleteSeplRun]
