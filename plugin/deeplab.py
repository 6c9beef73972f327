"""Operator "Train DeepLab": a form over ``sepl.fo.deeplab.train_from_view``."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._progress import run_operator
from ._util import add_target_input, field_names, form_params, library_warning, pct, target_view

MODELS = [("deeplabv3_resnet101", "DeepLabV3 ResNet-101"), ("deeplabv3_resnet50", "DeepLabV3 ResNet-50"),
          ("deeplabv3_tiny", "tiny (tests, CPU demos)")]


class TrainDeepLab(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="train_deeplab",
            label="Train DeepLab",
            description="Train DeepLabV3 on a label field and write its predictions back",
            icon="model_training",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,  # training is long: Schedule is offered first
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if not library_warning(inputs):
            _train_inputs(ctx, inputs)
        return types.Property(inputs, view=types.View(label="Train DeepLab"))

    def execute(self, ctx):
        p = form_params(ctx)
        view = target_view(ctx)
        return run_operator(ctx, lambda progress: _train(view, p, progress), deeplab_outputs,
                            reload=bool(p.get("predict_field")))

    def resolve_output(self, ctx):
        return deeplab_outputs(ctx.results or {})


def _train(view, p, progress):
    from sepl.fo.deeplab import train_from_view

    tags = [p["train_tag"], p["val_tag"]] if p.get("split") == "TAGS" else None
    summary = train_from_view(
        view, p["label_field"], p["out_dir"],
        val_fraction=p.get("val_fraction", 0.1), split_tags=tags,
        predict_field=p.get("predict_field") or None, progress=progress, verbose=False,
        model=p.get("model", "deeplabv3_resnet101"), epochs=int(p.get("epochs", 30)),
        batch_size=int(p.get("batch_size", 8)), crop_size=int(p.get("crop_size", 321)),
        lr=float(p.get("lr", 0.01)), backbone_weights=p.get("backbone_weights") or None,
        iters_per_epoch=p.get("iters_per_epoch") or None, workers=int(p.get("workers", 4)),
        resume=bool(p.get("resume", False)), overwrite=bool(p.get("overwrite", False)),
        random_weights=bool(p.get("random_weights", False)),
    )
    best = summary.get("best_miou")
    field = (summary.get("predictions") or {}).get("field")
    text = (f"**Train DeepLab on `{p['label_field']}` finished**\n\n"
            f"- best validation mIoU: **{pct(best)}%**\n- best checkpoint: `{summary['best_checkpoint']}`\n"
            f"- metrics log: `{summary['metrics_log']}` (loss.png and miou.png beside it)\n"
            f"- backbone initialisation: {summary['backbone_init']}"
            + (f"\n- predictions written to `{field}`" if field else ""))
    return {
        "best_miou": best,  # a fraction, like every stored score
        "checkpoint": summary["best_checkpoint"],
        "metrics_log": summary["metrics_log"],
        "backbone": summary["backbone_init"],
        "predict_field": field,
        "summary": text,
    }


def deeplab_outputs(results):
    outputs = types.Object()
    outputs.str("summary", label="Result", view=types.MarkdownView(read_only=True))
    return types.Property(outputs, view=types.View(label="Train DeepLab: result"))


def _train_inputs(ctx, inputs):
    add_target_input(ctx, inputs, action="Train on")
    import fiftyone as fo

    fields = field_names(ctx.dataset, fo.Segmentation)
    if not fields:
        inputs.view("no_fields", types.Warning(
            label="This dataset has no segmentation field",
            description="Compute pseudo-labels (or import ground truth) into a Segmentation field first"))
        return
    inputs.enum("label_field", fields, required=True, label="Label field to train on",
                view=types.AutocompleteView())
    inputs.str("out_dir", required=True, label="Run folder",
               description="Receives the exported data, checkpoints, metrics.jsonl and plots")
    if not ctx.params.get("out_dir"):
        return

    models = types.Dropdown()
    for value, label in MODELS:
        models.add_choice(value, label=label)
    inputs.enum("model", models.values(), default="deeplabv3_resnet101", view=models, label="Model")
    inputs.str("backbone_weights", label="ImageNet backbone weights (local path)",
               description="torchvision's resnet101-63fe2227.pth / resnet50-0676ba61.pth; empty: torch hub "
                           "cache if present, else random weights, only with the box below ticked")
    inputs.bool("random_weights", default=False, label="Allow a random backbone (much lower mIoU)")

    split = types.RadioGroup()
    split.add_choice("FRACTION", label="Random fraction")
    split.add_choice("TAGS", label="Sample tags")
    inputs.enum("split", split.values(), default="FRACTION", view=split, label="Train/val split")
    if ctx.params.get("split", "FRACTION") == "TAGS":
        inputs.str("train_tag", default="train", required=True, label="Training tag")
        inputs.str("val_tag", default="val", required=True, label="Validation tag")
    else:
        inputs.float("val_fraction", default=0.1, min=0.0, max=0.9, label="Validation fraction")

    inputs.int("epochs", default=30, min=1, label="Epochs")
    inputs.int("iters_per_epoch", label="Iterations per epoch (cap)", description="empty: one pass over the data")
    inputs.int("batch_size", default=8, min=2, label="Batch size")
    inputs.int("crop_size", default=321, min=32, label="Crop size")
    inputs.float("lr", default=0.01, min=0.0, label="Learning rate (poly decay)")
    inputs.int("workers", default=4, min=0, label="Data-loading workers")
    inputs.str("predict_field", label="Write predictions to field (optional)")
    inputs.bool("resume", default=False, label="Resume the run in this folder")
    inputs.bool("overwrite", default=False, label="Overwrite an earlier run / predictions field")


OPERATORS = [TrainDeepLab]
