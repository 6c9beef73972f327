"""Operators for the runs sepl records (one run per produced field)."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._util import form_params

from sepl.fo import runs


class DeleteSeplRun(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="delete_sepl_run",
            label="sepl: delete a run and its fields",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
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
        p = form_params(ctx)
        runs.delete_run(ctx.dataset, p["field"], p.get("delete_fields", True))
        ctx.trigger("reload_dataset")


OPERATORS = [DeleteSeplRun]
