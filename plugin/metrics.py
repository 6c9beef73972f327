"""Evaluation metric "mIoU" for FiftyOne's segmentation evaluations (custom_metrics)."""

import fiftyone.operators as foo


class MeanIoU(foo.EvaluationMetric):
    @property
    def config(self):
        config = foo.EvaluationMetricConfig(
            name="miou",
            label="mIoU",
            icon="percent",
            description="Mean IoU over the classes that occur, background included, 255 ignored "
                        "(the figure WSSS papers report)",
            eval_types=["segmentation"],
            aggregate_key="mIoU",
            lower_is_better=False,
        )
        # FiftyOne 1.22 reads lower_is_better from the config's kwargs when storing the value
        config.kwargs["lower_is_better"] = False
        return config

    def compute(self, samples, results, ignore_index=255):
        from sepl.fo.evaluate import results_miou

        return results_miou(samples, results, ignore_index=ignore_index)


OPERATORS = [MeanIoU]
