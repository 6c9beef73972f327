"""The 1464 real VOC 2012 train GT masks and TransCAM seeds through FiftyOne (skipped without ../shared)."""

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.shared_data


def test_voc_train_import_evaluate_worst(voc_train, dataset, tmp_path):
    from sepl.fo import evaluate, importers
    from sepl.fo.views import worst_ids
    from sepl.labelio import read_label
    from sepl.metrics import ConfusionMatrix, per_sample_miou

    ids = (voc_train / "train.txt").read_text().split()
    importers.import_voc(voc_train, dataset=dataset, ids_file=voc_train / "train.txt",
                         image_dir="images", label_dir="gt")
    importers.import_seeds(dataset, voc_train / "transcam", "transcam")
    assert len(dataset) == len(ids) == 1464
    res = evaluate(dataset, "transcam", "ground_truth")[0]

    # the same figure straight from the folders
    cm = ConfusionMatrix(num_classes=21, ignore_index=255)
    per_id = {}
    for sid in ids:
        gt, pred = read_label(voc_train / "gt" / f"{sid}.png"), read_label(voc_train / "transcam" / f"{sid}.png")
        cm.update(pred, gt)
        per_id[sid] = per_sample_miou(pred, gt, 21)
    assert np.array_equal(res.pixel_confusion_matrix, cm.matrix)
    assert res.miou() == pytest.approx(cm.miou(), abs=1e-12)
    assert res.num_samples == 1464 and not res.failures

    # and the same as `sepl eval` on the folders
    import json

    from sepl.cli import main

    assert main(["eval", "--pred", str(voc_train / "transcam"), "--gt", str(voc_train / "gt"),
                 "--list", str(voc_train / "train.txt"), "--json", str(tmp_path / "e.json"), "--no-progress",
                 "--workers", "1"]) == 0
    text = json.loads((tmp_path / "e.json").read_text())
    assert 100 * res.miou() == pytest.approx(100 * text["miou"] if text["miou"] <= 1 else text["miou"], abs=1e-6)

    worst = sorted(per_id, key=lambda i: (per_id[i], i))[:10]
    got = worst_ids(dataset, "transcam", limit=10)
    assert [round(per_id[i], 12) for i in got] == [round(per_id[i], 12) for i in worst]
    # images exist for 5 ids only: their samples point at real files
    have = [p for p in dataset.values("filepath") if Path(p).exists()]
    assert len(have) == 5
