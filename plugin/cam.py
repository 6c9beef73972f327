"""Operators for CAM seeds: train a CAM network (delegated) and generate seeds with it."""

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._progress import run_operator
from ._util import add_target_input, field_names, form_params, library_warning, pct, target_view

ARCHS = ["tiny", "resnet18", "resnet34", "resnet50", "resnet101"]


def _labels_input(ctx, inputs):
    fields = field_names(ctx.dataset, (fo.Classifications, fo.Classification))
    if not fields:
        inputs.view("nolabels", types.Warning(label="This dataset has no image-level labels field",
                                              description="Add fo.Classifications with each image's classes first"))
        return None
    inputs.enum("labels_field", fields, required=True, default=fields[0], label="Image-level labels field")
    return ctx.params.get("labels_field")


def _train_inputs(ctx, inputs):
    inputs.enum("arch", ARCHS, default="resnet50", label="Backbone",
                description="'tiny' trains in seconds on a CPU; ResNets need a GPU and ImageNet weights")
    inputs.enum("output_stride", [8, 16], default=16, label="Output stride")
    inputs.str("backbone_weights", label="ImageNet backbone weights (local path)",
               description="Empty: a ResNet needs 'random initialisation' ticked")
    inputs.bool("random_weights", default=False, label="Allow random initialisation of a ResNet",
                description="far weaker CAMs; recorded in the checkpoint")
    inputs.int("epochs", default=8, min=1, label="Epochs")
    inputs.int("batch_size", default=8, min=1, label="Batch size")
    inputs.float("lr", default=0.01, min=0.0, label="Learning rate")
    inputs.int("crop_size", default=448, min=32, label="Crop size")
    inputs.bool("importance_sampling", default=True, label="HFPL importance-sampling loss")
    inputs.bool("feature_similarity", default=True, label="HFPL feature-similarity loss")
    inputs.str("output_dir", required=True, label="Output folder (checkpoint.pth, loss_curve.png)",
               description="An existing checkpoint there is resumed")


class TrainCAMNetwork(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="train_cam_network",
            label="Train CAM network",
            description="Train a CAM classifier (HFPL losses) from image-level labels",
            icon="model_training",
            dynamic=True,
            execute_as_generator=True,
            allow_delegated_execution=True,
            allow_immediate_execution=True,
            default_choice_to_delegated=True,  # minutes to hours: Schedule is offered first
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if library_warning(inputs):
            return types.Property(inputs)
        add_target_input(ctx, inputs, action="Train on")
        if _labels_input(ctx, inputs) is not None:
            _train_inputs(ctx, inputs)
        return types.Property(inputs, view=types.View(label="Train CAM network"))

    def execute(self, ctx):
        p = form_params(ctx)
        view = target_view(ctx)
        return run_operator(ctx, lambda progress: _train(view, p, progress), train_outputs, reload=False)

    def resolve_output(self, ctx):
        return train_outputs(ctx.results or {})


def _train(view, p, progress):
    from sepl.fo.cam import train_cam

    keys = ["arch", "output_stride", "epochs", "batch_size", "lr", "crop_size", "importance_sampling",
            "feature_similarity", "random_weights"]
    options = {k: p[k] for k in keys if p.get(k) is not None}
    if p.get("backbone_weights"):
        options["backbone_weights"] = p["backbone_weights"]
    model = train_cam(view, p["labels_field"], output_dir=p["output_dir"], progress=progress, **options)
    loss = model.history[-1]["loss"]
    return {"checkpoint": model.checkpoint_path, "final_loss": loss,
            "summary": f"**Train CAM network finished**\n\n- checkpoint: `{model.checkpoint_path}` (use it in "
                       f"Generate CAM seeds)\n- epochs: {len(model.history)}\n- final loss: {loss:.4f}"}


def train_outputs(results):
    outputs = types.Object()
    outputs.str("summary", label="Result", view=types.MarkdownView(read_only=True))
    outputs.str("checkpoint", label="Checkpoint")
    return types.Property(outputs, view=types.View(label="Train CAM network: result"))


class GenerateCAMSeeds(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="generate_cam_seeds",
            label="Generate CAM seeds",
            description="Seeds (fo.Segmentation) from a trained CAM network and image-level labels",
            icon="scatter_plot",
            dynamic=True,
            execute_as_generator=True,
            allow_delegated_execution=True,
            allow_immediate_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if library_warning(inputs):
            return types.Property(inputs)
        add_target_input(ctx, inputs, action="Generate seeds for")
        if _labels_input(ctx, inputs) is None:
            return types.Property(inputs)
        inputs.str("checkpoint", required=True, label="CAM checkpoint (checkpoint.pth from training)")
        inputs.str("out_field", required=True, default="cam_seeds", label="Seed field")
        inputs.str("heatmap_field", label="Heatmap field (optional)")
        inputs.enum("bg_mode", ["threshold", "power"], default="threshold", label="Background")
        inputs.float("threshold", default=0.26, min=0.0, max=1.0, label="Background threshold")
        inputs.float("alpha", default=8.0, min=0.0, label="Background power (power mode)")
        inputs.str("scales", default="1.0,0.5,1.5,2.0", label="Scales (comma-separated)")
        inputs.bool("flip", default=True, label="Add horizontal flips")
        inputs.bool("overwrite", default=False, label="Overwrite an existing field")
        return types.Property(inputs, view=types.View(label="Generate CAM seeds"))

    def execute(self, ctx):
        p = form_params(ctx)
        view = target_view(ctx)
        return run_operator(ctx, lambda progress: _seeds(view, p, progress), seeds_outputs)

    def resolve_output(self, ctx):
        return seeds_outputs(ctx.results or {})


def _seeds(view, p, progress):
    from sepl.fo.cam import generate_seeds

    summary = generate_seeds(
        view, p["checkpoint"], p["out_field"], p["labels_field"],
        heatmap_field=p.get("heatmap_field") or None,
        scales=[float(s) for s in str(p.get("scales", "1.0")).split(",") if s.strip()],
        flip=p.get("flip", True), bg_mode=p.get("bg_mode", "threshold"),
        threshold=p.get("threshold", 0.26), alpha=p.get("alpha", 8.0),
        overwrite=p.get("overwrite", False), progress=progress,
    )
    text = (f"**Generate CAM seeds wrote `{p['out_field']}`**\n\n- seeds written: **{summary['written']}**\n"
            f"- resumed (already done): **{summary['skipped']}**\n"
            f"- samples without labels (all background): **{summary['unlabelled']}**\n"
            f"- background threshold: {pct(p.get('threshold', 0.26))}% of the normalised CAM")
    return dict(summary, summary=text)


def seeds_outputs(results):
    outputs = types.Object()
    outputs.str("summary", label="Result", view=types.MarkdownView(read_only=True))
    return types.Property(outputs, view=types.View(label="Generate CAM seeds: result"))


OPERATORS = [TrainCAMNetwork, GenerateCAMSeeds]
