"""Operators for CAM seeds: train a CAM network (delegated) and generate seeds with it."""

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._util import add_target_input, field_names, form_params, target_view

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
            label="sepl: train CAM network",
            description="Train a CAM classifier (HFPL losses) from image-level labels",
            dynamic=True,
            allow_delegated_execution=True,
            allow_immediate_execution=True,
            default_choice_to_delegated=True,
        )

    def resolve_delegation(self, ctx):
        return True  # training takes minutes to hours: never block the App

    def resolve_input(self, ctx):
        inputs = types.Object()
        add_target_input(ctx, inputs)
        if _labels_input(ctx, inputs) is not None:
            _train_inputs(ctx, inputs)
        return types.Property(inputs, view=types.View(label="Train CAM network"))

    def execute(self, ctx):
        from sepl.fo.cam import train_cam

        p = form_params(ctx)
        keys = ["arch", "output_stride", "epochs", "batch_size", "lr", "crop_size", "importance_sampling",
                "feature_similarity", "random_weights"]
        options = {k: p[k] for k in keys if p.get(k) is not None}
        if p.get("backbone_weights"):
            options["backbone_weights"] = p["backbone_weights"]
        model = train_cam(target_view(ctx), p["labels_field"], output_dir=p["output_dir"],
                          progress=lambda f, label: ctx.set_progress(progress=f, label=label), **options)
        return {"checkpoint": model.checkpoint_path, "final_loss": model.history[-1]["loss"]}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("checkpoint", label="Checkpoint")
        outputs.float("final_loss", label="Final loss")
        return types.Property(outputs)


class GenerateCAMSeeds(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="generate_cam_seeds",
            label="sepl: generate CAM seeds",
            description="Seeds (fo.Segmentation) from a trained CAM network and image-level labels",
            dynamic=True,
            allow_delegated_execution=True,
            allow_immediate_execution=True,
        )

    def resolve_delegation(self, ctx):
        return ctx.params.get("delegate", False)

    def resolve_input(self, ctx):
        inputs = types.Object()
        add_target_input(ctx, inputs)
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
        inputs.bool("delegate", default=False, label="Delegate execution")
        return types.Property(inputs, view=types.View(label="Generate CAM seeds"))

    def execute(self, ctx):
        from sepl.fo.cam import generate_seeds

        p = form_params(ctx)
        progress = (lambda f, label: ctx.set_progress(progress=f, label=label)) if ctx.delegated else False
        summary = generate_seeds(
            target_view(ctx), p["checkpoint"], p["out_field"], p["labels_field"],
            heatmap_field=p.get("heatmap_field") or None,
            scales=[float(s) for s in str(p.get("scales", "1.0")).split(",") if s.strip()],
            flip=p.get("flip", True), bg_mode=p.get("bg_mode", "threshold"),
            threshold=p.get("threshold", 0.26), alpha=p.get("alpha", 8.0),
            overwrite=p.get("overwrite", False), progress=progress,
        )
        if not ctx.delegated:
            ctx.trigger("reload_dataset")
        return summary

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("written", label="Seeds written")
        outputs.int("skipped", label="Already done (resumed)")
        outputs.int("unlabelled", label="Samples without labels (all background)")
        return types.Property(outputs)


OPERATORS = [TrainCAMNetwork, GenerateCAMSeeds]
