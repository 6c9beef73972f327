"""SAM 3 pseudo-labels: image tags become concept prompts, SAM 3 finds every instance of each.

``postprocess`` (scores, thresholds, masks at image size, as ``Sam3Processor`` computes them),
``pipeline`` (tags -> prompts -> instances -> label map, with Grounded-SAM's prompt presets and
painting rules). No FiftyOne here: see ``sepl.fo.sam3``. Models load through
``sepl.masks.hf_models.load_hf_sam("sam3", ...)``.
"""

from .pipeline import Sam3Config, Sam3PseudoLabels, Sam3Result
from .postprocess import Instances, select_instances

__all__ = ["Sam3Config", "Sam3PseudoLabels", "Sam3Result", "Instances", "select_instances"]
