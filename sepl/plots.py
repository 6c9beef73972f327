"""Figures for evaluation results: per-class IoU bars, mIoU histogram, before/after overlays.

Pure matplotlib on arrays (the Agg backend, no display needed); each function returns the
``Figure`` and writes it to ``path`` when given.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from .classes import voc_palette


def _figure(figsize):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _save(fig, path: Optional[str]):
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def plot_class_iou(iou: Sequence[float], class_names: Sequence[str], baseline: Optional[Sequence[float]] = None,
                   labels: Sequence[str] = ("after", "before"), path: Optional[str] = None):
    """Bars of per-class IoU (C,) in [0, 1], optionally beside a baseline.

    A NaN (a class absent from both prediction and GT) is drawn as an empty bar and left
    out of the mIoU in the legend/title, the convention of the printed table
    (``ConfusionMatrix.miou``, ``np.nanmean``), so the figure and the table agree.
    """
    raw = np.asarray(iou, dtype=float)
    iou = np.nan_to_num(raw)
    fig = _figure((max(6, 0.38 * len(iou)), 3.6))
    ax = fig.subplots()
    x = np.arange(len(iou))
    if baseline is not None:
        base_raw = np.asarray(baseline, dtype=float)
        base = np.nan_to_num(base_raw)
        ax.bar(x - 0.2, 100 * base, 0.4, label=f"{labels[1]} (mIoU {100 * _nanmean(base_raw):.1f})", color="#bbbbbb")
        ax.bar(x + 0.2, 100 * iou, 0.4, label=f"{labels[0]} (mIoU {100 * _nanmean(raw):.1f})", color="#d9534f")
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.bar(x, 100 * iou, 0.7, color="#d9534f")
        ax.set_title(f"mIoU {100 * _nanmean(raw):.2f}")
    ax.set_xticks(x, list(class_names), rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _nanmean(v: np.ndarray) -> float:
    """Mean over the classes that are scored (not NaN), as the table; NaN when none is."""
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def plot_miou_histogram(values: Sequence[float], bins: int = 20, xlabel: str = "per-sample mIoU",
                        path: Optional[str] = None):
    """Histogram of per-sample scores (None/NaN left out); a delta histogram when values
    may be negative."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[~np.isnan(v)]
    fig = _figure((5, 3.2))
    ax = fig.subplots()
    lo = min(0.0, float(v.min())) if len(v) else 0.0
    ax.hist(v, bins=bins, range=(lo, 1.0 if lo >= 0 else max(1e-6, float(v.max()))), color="#5b8def")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples")
    if len(v):
        ax.axvline(float(np.median(v)), color="k", ls="--", lw=1, label=f"median {np.median(v):.3f}")
        ax.legend(fontsize=8)
    return _save(fig, path)


def colorize(label: np.ndarray) -> np.ndarray:
    """(H, W) uint8 label map -> (H, W, 3) uint8 with the VOC palette (255 is cream)."""
    return voc_palette(256)[np.asarray(label, dtype=np.uint8)]


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend a coloured label map over an (H, W, 3) uint8 image; background stays clear."""
    col = colorize(label).astype(np.float32)
    img = np.asarray(image, dtype=np.float32)
    a = np.where((np.asarray(label) > 0)[..., None], alpha, 0.0)
    return (img * (1 - a) + col * a).astype(np.uint8)


def plot_before_after(image: np.ndarray, before: np.ndarray, after: np.ndarray, gt: Optional[np.ndarray] = None,
                      titles: Sequence[str] = ("before", "after", "ground truth"), path: Optional[str] = None):
    """Side by side: image with the before labels, with the after labels, and the GT."""
    panels = [overlay(image, before), overlay(image, after)] + ([overlay(image, gt)] if gt is not None else [])
    fig = _figure((3.2 * len(panels), 3.0))
    axes = fig.subplots(1, len(panels))
    for ax, p, t in zip(np.atleast_1d(axes), panels, titles):
        ax.imshow(p)
        ax.set_title(t, fontsize=9)
        ax.axis("off")
    return _save(fig, path)
