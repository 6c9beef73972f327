"""What the App shows about sepl results: the data behind the SEPL panel and the operators'
result dialogs, as plain dicts and lists (testable without the App).

Units: fractions in [0, 1] are what is stored and returned; text shows percent with one
decimal (``pct``) and charts plot percent.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import SeplError
from .convert import get_mask_targets


def pct(value: Optional[float]) -> str:
    """A fraction as text: percent with one decimal ("78.1"), "-" for None/NaN."""
    if value is None or not np.isfinite(value):
        return "-"
    return f"{100 * float(value):.1f}"


def _finite(v) -> Optional[float]:
    return None if v is None or not np.isfinite(v) else float(v)


# -- scoring without storing (operator dialogs) ----------------------------------------------------

def score_fields(view, fields: Sequence[str], gt_field: str) -> Dict[str, Dict[str, Any]]:
    """Dataset mIoU and per-class IoU of each of ``fields`` against ``gt_field`` on ``view``,
    computed without writing anything (the operators' before/after summary).

    Returns ``{field: {"miou": float, "class_iou": {class: float or None}, "scored": n}}``.
    """
    from .evaluate import evaluate_arrays

    targets = get_mask_targets(view._dataset, gt_field)
    if not targets:
        raise SeplError(f"ground-truth field '{gt_field}' has no mask targets", hint="set its mask targets")
    num_classes = max(targets) + 1
    classes = [targets.get(i, str(i)) for i in range(num_classes)]
    out = {}
    for f in fields:
        cm, per_sample, _ = evaluate_arrays(view, f, gt_field, num_classes)
        iou = cm.iou()
        out[f] = dict(miou=_finite(np.nanmean(iou)) if np.isfinite(iou).any() else None,
                      class_iou={c: _finite(v) for c, v in zip(classes, iou)}, scored=len(per_sample))
    return out


def iou_table(columns: Dict[str, Dict[str, Optional[float]]], mious: Optional[Dict[str, Optional[float]]] = None,
              change: bool = True) -> str:
    """A Markdown table of per-class IoU (%) with one column per series (and the change of
    the last series against the first when there are two), then the mIoU row."""
    names = list(columns)
    classes = list(dict.fromkeys(c for col in columns.values() for c in col))
    head = ["class"] + names + (["change"] if change and len(names) == 2 else [])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def line(label, values):
        cells = [pct(v) for v in values]
        if change and len(values) == 2:
            a, b = values
            cells.append("-" if a is None or b is None else f"{100 * (b - a):+.1f}")
        return f"| {label} | " + " | ".join(cells) + " |"

    for c in classes:
        rows.append(line(c, [columns[n].get(c) for n in names]))
    if mious is not None:
        rows.append(line("**mIoU**", [mious.get(n) for n in names]))
    return "\n".join(rows)


def class_iou_bars(series: Dict[str, Dict[str, Optional[float]]]) -> List[Dict[str, Any]]:
    """Plotly traces: one grouped bar series per evaluation, IoU in percent."""
    return [{"type": "bar", "name": name, "x": list(iou), "y": [None if v is None else round(100 * v, 2)
                                                                for v in iou.values()],
             "hovertemplate": "%{x}: %{y:.1f}%<extra>" + name + "</extra>"}
            for name, iou in series.items()]


# -- evaluations on a dataset (the panel) ----------------------------------------------------------

def segmentation_evaluations(dataset) -> List[str]:
    """Keys of the dataset's segmentation evaluations (sepl's and FiftyOne's own)."""
    keys = []
    for key in dataset.list_evaluations():
        cfg = dataset.get_evaluation_info(key).config
        if getattr(cfg, "type", None) == "segmentation":
            keys.append(key)
    return keys


def evaluation_class_iou(dataset, key: str) -> Dict[str, Optional[float]]:
    """Per-class IoU (fractions) of evaluation ``key`` over the view it was run on, from its
    pixel confusion matrix: sepl evaluations and FiftyOne's native ones alike."""
    results = dataset.load_evaluation_results(key)
    if hasattr(results, "class_iou"):
        return {c: _finite(v) for c, v in results.class_iou().items()}
    m = np.asarray(results.pixel_confusion_matrix, dtype=np.float64)
    tp = np.diag(m)
    union = m.sum(0) + m.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    targets = get_mask_targets(dataset, results.config.gt_field)
    names = [targets.get(int(c), str(c)) if str(c).isdigit() else str(c) for c in results.classes]
    return {n: _finite(v) for n, v in zip(names, iou)}


def evaluation_miou(iou: Dict[str, Optional[float]]) -> Optional[float]:
    vals = [v for v in iou.values() if v is not None]
    return float(np.mean(vals)) if vals else None


def score_field_of(dataset, key: str) -> Optional[str]:
    """The per-sample mIoU field of evaluation ``key`` (``<key>_miou``), if it exists."""
    field = f"{key}_miou"
    return field if dataset.has_field(field) else None


def miou_histogram(view, key: str, bins: int = 10) -> Dict[str, Any]:
    """Per-sample mIoU of evaluation ``key`` binned on [0, 1]: ``{"edges": [bins+1],
    "counts": [bins], "field": name, "missing": samples without a score}``."""
    field = score_field_of(view._dataset, key)
    if field is None:
        raise SeplError(f"evaluation '{key}' has no per-sample mIoU field '{key}_miou'",
                        hint="evaluate with sepl (Evaluate segmentation) to get per-sample scores")
    values = view.values(field)
    scores = np.asarray([v for v in values if v is not None], dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts, _ = np.histogram(np.clip(scores, 0, 1), bins=edges)
    return dict(edges=edges.tolist(), counts=counts.astype(int).tolist(), field=field,
                missing=len(values) - len(scores))


def histogram_trace(hist: Dict[str, Any], name: str) -> Dict[str, Any]:
    """A plotly bar trace of ``miou_histogram`` output, bins labelled in percent."""
    e = hist["edges"]
    centers = [round(50 * (a + b), 2) for a, b in zip(e[:-1], e[1:])]
    return {"type": "bar", "name": name, "x": centers, "y": hist["counts"], "width": 100 * (e[1] - e[0]) * 0.95,
            "hovertemplate": "mIoU %{x:.0f}%: %{y} samples<extra></extra>"}


def bin_view(view, key: str, lo: float, hi: float):
    """Samples whose per-sample mIoU of ``key`` lies in [lo, hi) ([lo, 1] for the last bin),
    lowest first."""
    from fiftyone import ViewField as F

    field = f"{key}_miou"
    upper = F(field) <= hi if hi >= 1.0 else F(field) < hi
    return view.match((F(field) >= lo) & upper).sort_by(field)


def class_view(view, key: str, class_name: str):
    """Samples where ``class_name`` occurs (in GT or prediction) for evaluation ``key``,
    lowest IoU of that class first; from ``<key>_class_iou`` when sepl stored it, else the
    samples whose ground truth holds that class."""
    from fiftyone import ViewField as F

    ds = view._dataset
    field = f"{key}_class_iou"
    if ds.has_field(field):
        path = f"{field}.{class_name}"
        return view.exists(path).sort_by(path)
    cfg = ds.get_evaluation_info(key).config
    targets = {v: k for k, v in get_mask_targets(ds, cfg.gt_field).items()}
    if class_name not in targets:
        raise SeplError(f"class '{class_name}' is not a mask target of '{cfg.gt_field}'")
    ids = [sid for sid, m in zip(*view.values(["id", f"{cfg.gt_field}.mask"]))
           if m is not None and (np.asarray(m) == targets[class_name]).any()]
    return view.select(ids)


# -- mask decisions of a SEPL run --------------------------------------------------------------

DECISION_KINDS = ("taken", "rejected", "background", "unused")


def refine_runs(dataset) -> List[Dict[str, Any]]:
    """The dataset's SEPL refine runs that stored per-mask decisions:
    ``[{"out_field", "decisions_field", "seed_field", "masks_field"}]``."""
    runs = []
    for key in dataset.list_runs():
        if not key.startswith("sepl_"):
            continue
        cfg = dataset.get_run_info(key).config.serialize()
        if cfg.get("method") == "refine" and cfg.get("decisions_field") and dataset.has_field(cfg["decisions_field"]):
            runs.append(dict(out_field=cfg["fields"][0], decisions_field=cfg["decisions_field"],
                             seed_field=cfg.get("seed_field"), masks_field=cfg.get("masks_field")))
    return runs


def _kind(reason: Optional[str], selected: Optional[bool]) -> str:
    if selected:
        return "taken"
    if reason == "rejected":
        return "rejected"
    if reason == "background":
        return "background"
    return "unused"  # no overlap with a competing class, or an empty mask


def decision_summary(view, out_field: str, decisions_field: str, seed_field: Optional[str] = None,
                     limit: int = 200) -> Dict[str, Any]:
    """Per-sample summary of the mask decisions of a SEPL run on (up to ``limit``) samples of
    ``view``: masks taken / rejected / won by background / unused, and the CAM fallback:
    the share of the output's foreground pixels that no taken mask covers (the seed kept).

    Returns ``{"rows": [{"id", "name", "taken", "rejected", "background", "unused",
    "cam_fallback"}], "totals": {...}}``; ``cam_fallback`` is a fraction (None when the
    output has no foreground).
    """
    import os

    import fiftyone as fo

    from .convert import detections_to_masks, load_label_map

    rows = []
    for sample in view.limit(limit).select_fields([out_field, decisions_field] + ([seed_field] if seed_field else [])):
        dets = sample[decisions_field]
        items = dets.detections if dets is not None else []
        counts = {k: 0 for k in DECISION_KINDS}
        for d in items:
            counts[_kind(d.get_field("reason") if d.has_field("reason") else None,
                         d.get_field("selected") if d.has_field("selected") else None)] += 1
        fallback = None
        if sample[out_field] is not None:
            out = load_label_map(sample, out_field)
            fg = (out > 0) & (out != 255)
            if fg.any():
                taken = fo.Detections(detections=[d for d in items if d.has_field("selected") and d["selected"]])
                covered = detections_to_masks(taken, *out.shape).any(0) if items else np.zeros_like(fg)
                fallback = float((fg & ~covered).sum() / fg.sum())
        rows.append(dict(id=sample.id, name=os.path.basename(sample.filepath), cam_fallback=fallback, **counts))
    totals = {k: int(sum(r[k] for r in rows)) for k in DECISION_KINDS}
    fb = [r["cam_fallback"] for r in rows if r["cam_fallback"] is not None]
    totals["cam_fallback"] = float(np.mean(fb)) if fb else None
    return dict(rows=rows, totals=totals)


def decisions_table(summary: Dict[str, Any], max_rows: int = 25) -> str:
    """Markdown table of ``decision_summary`` (CAM fallback in % of foreground pixels)."""
    head = "| sample | taken | rejected | background | unused | CAM fallback (% fg) |\n|---|---|---|---|---|---|"
    lines = [head]
    for r in summary["rows"][:max_rows]:
        lines.append(f"| {r['name']} | {r['taken']} | {r['rejected']} | {r['background']} | {r['unused']} | "
                     f"{pct(r['cam_fallback'])} |")
    t = summary["totals"]
    lines.append(f"| **all {len(summary['rows'])}** | {t['taken']} | {t['rejected']} | {t['background']} | "
                 f"{t['unused']} | {pct(t['cam_fallback'])} (mean) |")
    return "\n".join(lines)
