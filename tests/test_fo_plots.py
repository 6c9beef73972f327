"""sepl.plots writes real figures from evaluation results."""

import numpy as np
from PIL import Image


def test_plots_write_pngs(tmp_path, rng):
    from sepl import plots

    names = ["background", "a", "b", "c"]
    fig = plots.plot_class_iou([0.9, 0.5, np.nan, 0.2], names, baseline=[0.8, 0.4, 0.1, 0.3],
                               path=str(tmp_path / "iou.png"))
    assert len(fig.axes[0].patches) == 8
    plots.plot_miou_histogram(list(rng.random(50)) + [None], path=str(tmp_path / "hist.png"))
    plots.plot_miou_histogram(list(rng.random(50) - 0.5), xlabel="delta", path=str(tmp_path / "delta.png"))
    img = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    before = np.zeros((20, 30), np.uint8)
    after = before.copy()
    after[5:10, 5:10] = 3
    ov = plots.overlay(img, after)
    assert np.array_equal(ov[0, 0], img[0, 0]) and not np.array_equal(ov[6, 6], img[6, 6])
    plots.plot_before_after(img, before, after, gt=after, path=str(tmp_path / "ba.png"))
    for name in ("iou", "hist", "delta", "ba"):
        with Image.open(tmp_path / f"{name}.png") as im:
            assert im.size[0] > 200
