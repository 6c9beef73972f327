"""The run's metrics log (JSON lines) and its plots."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List


class MetricsLog:
    """Append-only JSON-lines log: one ``{"type": "train" | "val", ...}`` record a line.

    Appending (not rewriting) keeps the history of a resumed run in one file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def append(self, record: Dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> List[Dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(ln) for ln in self.path.read_text().splitlines() if ln.strip()]


def plot_metrics(log: MetricsLog, out_dir: str | os.PathLike) -> List[Path]:
    """Write ``loss.png`` (training loss by iteration) and ``miou.png`` (validation mIoU by
    epoch) from the log; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = log.read()
    out_dir = Path(out_dir)
    written = []
    train = [r for r in records if r.get("type") == "train"]
    val = [r for r in records if r.get("type") == "val"]
    curves = [
        (train, "loss.png", [r["iter"] for r in train], [r["loss"] for r in train], "iteration", "training loss",
         dict(lw=1)),
        (val, "miou.png", [r["epoch"] + 1 for r in val], [100 * r["miou"] for r in val], "epoch",
         "validation mIoU (%)", dict(marker="o")),
    ]
    for rows, name, x, y, xlabel, ylabel, style in curves:
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(x, y, **style)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        written.append(out_dir / name)
    return written
