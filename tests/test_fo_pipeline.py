"""sepl.fo: importers, refine, evaluate, worst samples and SEPLModel on a real FiftyOne database."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sepl.errors import SeplError
from sepl.synth import SYNTH_CLASSES

REPO = Path(__file__).resolve().parent.parent


def _ids(root):
    return (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()


def make_inputs(root: Path, out: Path, rng):
    """Seeds (GT shifted, no 255) and masks (GT components + noise) for a VOC layout."""
    from sepl import amgio
    from sepl.labelio import read_label, write_label

    for sid in _ids(root):
        gt = read_label(root / "SegmentationClass" / f"{sid}.png")
        seed = np.where(gt == 255, 0, gt).astype(np.uint8)
        seed = np.roll(seed, 5, axis=1)
        write_label(out / "seeds" / f"{sid}.png", seed)
        masks = [gt == c for c in np.unique(gt) if c not in (0, 255)]
        masks += [rng.random(gt.shape) > 0.98, np.zeros(gt.shape, bool)]
        masks[-1][:20, :30] = True
        meta = [{"predicted_iou": 0.5 + 0.1 * k, "stability_score": 0.9} for k in range(len(masks))]
        amgio.write_amg_folder(out / "masks" / sid, np.stack(masks), meta)
    return out / "seeds", out / "masks"


@pytest.fixture
def voc_ds(dataset, synth_voc, tmp_path, rng):
    from sepl.fo import importers

    seeds, masks = make_inputs(synth_voc, tmp_path / "inputs", rng)
    importers.import_voc(synth_voc, dataset=dataset, classes=SYNTH_CLASSES)
    importers.import_seeds(dataset, seeds, "seeds")
    importers.import_masks(dataset, masks, "sam")
    return dataset


def test_import_voc_layout_and_resume(dataset, synth_voc, tmp_path):
    from sepl.fo import importers
    from sepl.fo.convert import get_mask_targets, image_labels, load_label_map
    from sepl.labelio import read_label

    importers.import_voc(synth_voc, dataset=dataset, classes=SYNTH_CLASSES)
    ids = _ids(synth_voc)
    assert len(dataset) == len(ids)
    assert get_mask_targets(dataset, "ground_truth") == dict(enumerate(SYNTH_CLASSES))
    for sample in dataset:
        sid = Path(sample.filepath).stem
        gt = read_label(synth_voc / "SegmentationClass" / f"{sid}.png")
        assert np.array_equal(load_label_map(sample, "ground_truth", shape=(160, 200)), gt)
        present = [SYNTH_CLASSES[c] for c in np.unique(gt) if 0 < c < 255]
        assert image_labels(sample, "image_labels") == present
    importers.import_voc(synth_voc, dataset=dataset, classes=SYNTH_CLASSES)  # resumes: nothing new
    assert len(dataset) == len(ids)

    # on-disk storage: PNGs under mask_dir, same arrays back
    import fiftyone as fo

    ds2 = fo.Dataset()
    try:
        importers.import_voc(synth_voc, dataset=ds2, classes=SYNTH_CLASSES, storage="disk", mask_dir=str(tmp_path))
        s = ds2.first()
        assert s.ground_truth.mask is None and Path(s.ground_truth.mask_path).exists()
        assert str(tmp_path) in s.ground_truth.mask_path
        sid = Path(s.filepath).stem
        assert np.array_equal(load_label_map(s, "ground_truth"),
                              read_label(synth_voc / "SegmentationClass" / f"{sid}.png"))
    finally:
        ds2.delete()


def _coco_json(path: Path, image_dir: Path):
    from PIL import Image

    from sepl.classes import COCO_CLASSES

    cats = [{"id": i + 1 + i // 10, "name": n} for i, n in enumerate(COCO_CLASSES)]  # ids with gaps
    image_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for iid in (1, 2):
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(image_dir / f"{iid:012d}.jpg")
        images.append({"id": iid, "file_name": f"{iid:012d}.jpg", "height": 40, "width": 50})

    def box(x0, y0, x1, y1):
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]

    # image 1: a big "person" (cat 1) containing a small "toothbrush" (last cat), a crowd "car"
    anns.append({"id": 1, "image_id": 1, "category_id": cats[0]["id"], "segmentation": box(5, 5, 40, 35),
                 "area": 1050, "iscrowd": 0, "bbox": [5, 5, 35, 30]})
    anns.append({"id": 2, "image_id": 1, "category_id": cats[-1]["id"], "segmentation": box(10, 10, 20, 20),
                 "area": 100, "iscrowd": 0, "bbox": [10, 10, 10, 10]})
    from pycocotools import mask as mu

    crowd = np.zeros((40, 50), np.uint8, order="F")
    crowd[30:40, 0:50] = 1
    rle = mu.encode(crowd)
    rle["counts"] = rle["counts"].decode()
    anns.append({"id": 3, "image_id": 1, "category_id": cats[2]["id"], "segmentation": rle, "area": 500,
                 "iscrowd": 1, "bbox": [0, 30, 50, 10]})
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return cats


def test_import_coco_semantic_gt(dataset, tmp_path):
    from sepl.classes import COCO_CLASSES
    from sepl.fo import importers
    from sepl.fo.convert import get_mask_targets, image_labels, load_label_map

    _coco_json(tmp_path / "inst.json", tmp_path / "imgs")
    importers.import_coco(tmp_path / "imgs", tmp_path / "inst.json", dataset=dataset)
    assert len(dataset) == 2
    targets = get_mask_targets(dataset, "ground_truth")
    assert len(targets) == 81 and targets[0] == "background" and targets[80] == COCO_CLASSES[-1]
    s1 = dataset.match({"coco_id": 1}).first()
    lab = load_label_map(s1, "ground_truth", shape=(40, 50))
    assert lab[15, 15] == 80  # small instance painted over the large one
    assert lab[25, 25] == 1
    assert lab[38, 45] == 255 and lab[33, 20] == 1  # crowd is ignore only where no instance lies
    assert lab[2, 2] == 0
    assert image_labels(s1, "image_labels") == ["person", "toothbrush"]
    s2 = dataset.match({"coco_id": 2}).first()
    assert load_label_map(s2, "ground_truth").max() == 0


def test_import_folder_with_tags_csv(dataset, tmp_path):
    from PIL import Image

    from sepl.fo import importers
    from sepl.fo.convert import image_labels

    for name in ("a.jpg", "b.png", "c.jpg"):
        Image.fromarray(np.zeros((8, 9, 3), np.uint8)).save(tmp_path / name)
    (tmp_path / "tags.csv").write_text("filename,tags\na.jpg,cat;dog\nb.png,dog\nc.jpg,\n")
    importers.import_folder(tmp_path, tmp_path / "tags.csv", dataset=dataset)
    assert len(dataset) == 3
    by_name = {Path(s.filepath).name: s for s in dataset}
    assert image_labels(by_name["a.jpg"], "image_labels") == ["cat", "dog"]
    assert image_labels(by_name["c.jpg"], "image_labels") == []
    # VOC tags without --classes: VOC's index order, not an order guessed from the tags
    from sepl.classes import VOC_CLASSES

    assert dataset.default_mask_targets == dict(enumerate(VOC_CLASSES))
    assert by_name["b.png"].metadata.width == 9
    with pytest.raises(SeplError, match="not in the class list"):
        importers.import_folder(tmp_path, tmp_path / "tags.csv", dataset=dataset, classes=["background", "cat"])


def test_import_seeds_reports_bad_samples_and_resumes(dataset, synth_voc, tmp_path, rng):
    from sepl.fo import importers
    from sepl.fo.convert import load_label_map
    from sepl.labelio import write_label

    seeds, _ = make_inputs(synth_voc, tmp_path / "in", rng)
    ids = _ids(synth_voc)
    (seeds / f"{ids[0]}.png").unlink()                                   # missing
    write_label(seeds / f"{ids[1]}.png", np.zeros((10, 10), np.uint8))  # wrong size
    write_label(seeds / f"{ids[2]}.png", np.full((160, 200), 9, np.uint8))  # class 9 of 6
    importers.import_voc(synth_voc, dataset=dataset, classes=SYNTH_CLASSES)
    with pytest.raises(SeplError) as e:
        importers.import_seeds(dataset, seeds, "seeds")
    msg = str(e.value)
    assert "3 sample(s)" in msg and all(i in msg for i in ids[:3])
    assert "10x10" in msg and "[9]" in msg
    assert len(dataset.exists("seeds")) == len(ids) - 3
    kept = dataset.exists("seeds").first()
    before = load_label_map(kept, "seeds").copy()
    # fix the files, rerun: only the three missing samples are written
    for i in ids[:3]:
        write_label(seeds / f"{i}.png", np.zeros((160, 200), np.uint8))
    assert importers.import_seeds(dataset, seeds, "seeds") == 3
    assert np.array_equal(load_label_map(dataset[kept.filepath], "seeds"), before)
    # another folder into the same field is refused, then allowed with overwrite
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(SeplError, match="already exists"):
        importers.import_seeds(dataset, other, "seeds")
    assert len(dataset.exists("seeds")) == len(ids)


def test_cam_dicts_to_labels(dataset, synth_voc, tmp_path):
    from sepl.fo import importers
    from sepl.fo.convert import load_label_map

    cams = np.zeros((2, 4, 5), np.float32)
    cams[0, :, :2] = 0.9   # key 0 -> class 1
    cams[1, :, 3:] = 0.5   # key 4 -> class 5
    d = {"keys": np.array([0, 4]), "high_res": cams}
    lab = importers.cam_to_label(d, (4, 5), bg_threshold=0.3)
    assert (lab[:, :2] == 1).all() and (lab[:, 2] == 0).all() and (lab[:, 3:] == 5).all()
    lab = importers.cam_to_label(d, (4, 5), bg_threshold=0.6)
    assert (lab[:, 3:] == 0).all()
    # power: bg = (1 - 0.5) ** 1 = 0.5 ties with the class (argmax keeps background), ** 2 = 0.25 loses
    assert (importers.cam_to_label(d, (4, 5), bg_power=2)[:, 3:] == 5).all()
    seam = {0: cams[0], 4: cams[1]}
    assert np.array_equal(importers.cam_to_label(seam, (4, 5), bg_threshold=0.3),
                          importers.cam_to_label(d, (4, 5), bg_threshold=0.3))
    with pytest.raises(SeplError, match="high_res CAMs are 5x4"):
        importers.cam_to_label(d, (8, 10), bg_threshold=0.3)
    # strided 'cam' is upsampled to the image
    assert importers.cam_to_label({"keys": d["keys"], "cam": cams}, (8, 10), bg_threshold=0.3).shape == (8, 10)
    with pytest.raises(SeplError, match="either"):
        importers.cam_to_label(d, (4, 5))

    importers.import_voc(synth_voc, dataset=dataset, classes=SYNTH_CLASSES)
    folder = tmp_path / "cams"
    folder.mkdir()
    for s in dataset:
        hr = np.zeros((1, 160, 200), np.float32)
        hr[0, 40:80, 50:100] = 1.0
        np.save(folder / f"{Path(s.filepath).stem}.npy", {"keys": np.array([2]), "high_res": hr})
    assert importers.import_cams(dataset, folder, "cam_seeds", bg_threshold=0.26) == len(dataset)
    lab = load_label_map(dataset.first(), "cam_seeds")
    assert (lab[40:80, 50:100] == 3).all() and lab.sum() == 3 * 40 * 50


def test_import_masks_amg_and_rle(dataset, synth_voc, tmp_path, rng):
    from pycocotools import mask as mu

    from sepl.fo import importers
    from sepl.fo.convert import load_masks

    _, masks_dir = make_inputs(synth_voc, tmp_path / "in", rng)
    importers.import_voc(synth_voc, dataset=dataset, classes=SYNTH_CLASSES)
    ids = _ids(synth_voc)
    # one sample as an RLE json instead of a folder, one with masks of the wrong size
    import shutil

    from sepl import amgio

    m, _ = amgio.read_amg_folder(masks_dir / ids[0])
    shutil.rmtree(masks_dir / ids[0])
    rles = []
    for k in range(len(m)):
        r = mu.encode(np.asfortranarray(m[k].astype(np.uint8)))
        r["counts"] = r["counts"].decode()
        rles.append({"segmentation": r, "predicted_iou": 0.7, "stability_score": 0.95})
    (masks_dir / f"{ids[0]}.json").write_text(json.dumps(rles))
    shutil.rmtree(masks_dir / ids[1])
    amgio.write_amg_folder(masks_dir / ids[1], np.zeros((2, 16, 20), bool), [{"predicted_iou": 1.0}] * 2)
    with pytest.raises(SeplError) as e:
        importers.import_masks(dataset, masks_dir, "sam")
    assert ids[1] in str(e.value) and "20x16" in str(e.value)
    assert len(dataset.exists("sam")) == len(ids) - 1
    s0 = dataset[str(synth_voc / "JPEGImages" / f"{ids[0]}.jpg")]
    assert np.array_equal(load_masks(s0, "sam", (160, 200)), m)
    assert [d.confidence for d in s0.sam.detections] == pytest.approx([0.7] * len(m))


def test_refine_matches_engine_and_records_decisions(voc_ds):
    from sepl.fo import refine
    from sepl.fo.convert import load_label_map, load_masks
    from sepl.merge import merge

    assert refine(voc_ds, "seeds", "sam", "sepl", mode="paper") == len(voc_ds)
    info = voc_ds.get_run_info("sepl_sepl").config.serialize()
    assert info["method"] == "refine" and info["seed_field"] == "seeds" and info["mode"] == "paper"
    assert voc_ds.mask_targets["sepl"] == voc_ds.mask_targets["seeds"]
    for s in voc_ds:
        seed = load_label_map(s, "seeds")
        masks = load_masks(s, "sam", seed.shape)
        ref = merge(seed, masks, mode="paper", num_classes=len(SYNTH_CLASSES))
        assert np.array_equal(load_label_map(s, "sepl"), ref.labels)
        dets = s.sepl_masks.detections
        assert len(dets) == len(masks)
        for k, d in enumerate(dets):
            assert d.selected == bool(ref.records["selected"][k])
            assert d.source_id == s.sam.detections[k].id
            if d.selected:
                assert d.label == SYNTH_CLASSES[int(ref.records["class_id"][k])]
            else:
                assert d.label == ref.records["reason"][k] and d.label not in SYNTH_CLASSES[1:]
    # same call again resumes (nothing left), other parameters are refused, overwrite replaces
    assert refine(voc_ds, "seeds", "sam", "sepl", mode="paper") == 0
    with pytest.raises(SeplError, match="already exists"):
        refine(voc_ds, "seeds", "sam", "sepl", mode="paper", op_thresh=0.9)
    assert refine(voc_ds, "seeds", "sam", "sepl", mode="paper", op_thresh=0.9, overwrite=True) == len(voc_ds)


def test_refine_bad_input_names_samples_and_keeps_others(voc_ds):
    import fiftyone as fo

    from sepl.fo import refine

    first = voc_ds.first()
    first.seeds = None
    first.save()
    with pytest.raises(SeplError) as e:
        refine(voc_ds, "seeds", "sam", "out")
    assert first.id in str(e.value) and "holds no segmentation" in str(e.value)
    assert len(voc_ds.exists("out")) == len(voc_ds) - 1
    with pytest.raises(SeplError, match="not Detections"):
        refine(voc_ds, "seeds", "ground_truth", "out2")
    with pytest.raises(SeplError, match="no field 'nope'"):
        refine(voc_ds, "nope", "sam", "out3")
    # a seed class outside the mask targets
    s = voc_ds.skip(1).first()
    bad = np.array(s.seeds.get_mask())
    bad[0, 0] = 17
    s.seeds = fo.Segmentation(mask=bad)
    s.save()
    with pytest.raises(SeplError, match=r"classes \[17\]"):
        refine(voc_ds.select(s.id), "seeds", "sam", "out4")


def test_evaluate_per_sample_dataset_and_delta(voc_ds):
    from sepl.fo import evaluate, refine
    from sepl.fo.convert import load_label_map
    from sepl.metrics import ConfusionMatrix, per_sample_miou

    refine(voc_ds, "seeds", "sam", "sepl")
    before, after = evaluate(voc_ds, ["seeds", "sepl"], "ground_truth")
    cms = {f: ConfusionMatrix(num_classes=6, ignore_index=255) for f in ("seeds", "sepl")}
    for s in voc_ds:
        gt = load_label_map(s, "ground_truth")
        for f in cms:
            pred = load_label_map(s, f)
            cms[f].update(pred, gt)
            assert s[f"{f}_miou"] == pytest.approx(per_sample_miou(pred, gt, 6))
        assert s.sepl_delta == pytest.approx(s.sepl_miou - s.seeds_miou)
        assert set(s.sepl_class_iou) <= set(SYNTH_CLASSES)
    assert np.array_equal(before.pixel_confusion_matrix, cms["seeds"].matrix)
    assert after.miou() == pytest.approx(cms["sepl"].miou())
    assert after.miou() > before.miou()
    loaded = voc_ds.load_evaluation_results("sepl")
    assert loaded.miou() == pytest.approx(after.miou()) and loaded.num_samples == len(voc_ds)
    assert voc_ds.get_evaluation_info("sepl").config.method == "sepl"
    # the same prediction against the same GT recomputes; a different GT for the key is refused
    evaluate(voc_ds, "sepl", "ground_truth")
    assert not voc_ds.has_field("sepl_delta")
    evaluate(voc_ds, ["seeds", "sepl"], "ground_truth")
    with pytest.raises(SeplError, match="other parameters"):
        evaluate(voc_ds, "sepl", "seeds")
    # deleting the evaluation removes its fields
    voc_ds.delete_evaluation("sepl")
    assert not voc_ds.has_field("sepl_miou") and not voc_ds.has_field("sepl_delta")


def test_evaluate_bad_input(voc_ds):
    import fiftyone as fo

    from sepl.fo import evaluate

    with pytest.raises(SeplError, match="not Segmentation"):
        evaluate(voc_ds, "seeds", "sam")
    s = voc_ds.first()
    s.seeds = fo.Segmentation(mask=np.zeros((10, 10), np.uint8))
    s.save()
    with pytest.raises(SeplError) as e:
        evaluate(voc_ds, "seeds", "ground_truth")
    assert s.id in str(e.value) and "never resized" in str(e.value)
    assert len(voc_ds.exists("seeds_miou")) == len(voc_ds) - 1
    res = evaluate(voc_ds, "seeds", "ground_truth", strict=False)[0]
    assert len(res.failures) == 1 and res.num_samples == len(voc_ds) - 1


def test_worst_samples_view(voc_ds):
    from sepl.fo import evaluate, refine, worst_samples
    from sepl.fo.views import worst_ids

    refine(voc_ds, "seeds", "sam", "sepl")
    evaluate(voc_ds, ["seeds", "sepl"], "ground_truth")
    scores = worst_samples(voc_ds, "sepl").values("sepl_miou")
    assert scores == sorted(scores) and len(scores) == len(voc_ds)
    deltas = worst_samples(voc_ds, "sepl", by="delta", limit=3).values("sepl_delta")
    assert len(deltas) == 3 and deltas == sorted(voc_ds.values("sepl_delta"))[:3]
    worst = worst_ids(voc_ds, "sepl", limit=2)
    all_ = sorted(zip(voc_ds.values("sepl_miou"), [Path(p).stem for p in voc_ds.values("filepath")]))
    assert worst == [sid for _, sid in all_[:2]]
    with pytest.raises(SeplError, match="evaluate first"):
        worst_samples(voc_ds, "nothing")


def test_apply_model_matches_refine(voc_ds):
    import sepl
    from sepl.fo import refine
    from sepl.fo.convert import load_label_map

    refine(voc_ds, "seeds", "sam", "sepl")
    voc_ds.apply_model(sepl.SEPLModel(mode="paper"), label_field="by_model",
                       seed_field="seeds", masks_field="sam", skip_failures=False)
    for s in voc_ds:
        assert np.array_equal(load_label_map(s, "by_model"), load_label_map(s, "sepl"))


def test_import_sepl_stays_light():
    code = "import sys, sepl; assert 'fiftyone' not in sys.modules and 'torch' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_cli_import_refine_evaluate(synth_voc, tmp_path, rng, capsys):
    import fiftyone as fo

    from sepl.cli import main

    seeds, masks = make_inputs(synth_voc, tmp_path / "in", rng)
    name = f"sepl-test-cli-{rng.integers(1 << 30)}"
    try:
        assert main(["import", "voc", "--dataset", name, "--root", str(synth_voc),
                     "--classes", ",".join(SYNTH_CLASSES)]) == 0
        assert main(["import", "seeds", "--dataset", name, "--folder", str(seeds)]) == 0
        assert main(["import", "masks", "--dataset", name, "--folder", str(masks), "--field", "sam"]) == 0
        assert main(["refine", "--dataset", name, "--seeds", "seeds", "--masks", "sam", "--out", "sepl"]) == 0
        assert main(["evaluate", "--dataset", name, "--pred", "seeds", "sepl", "--worst", "2", "--by", "delta",
                     "--plots", str(tmp_path / "fig")]) == 0
        assert (tmp_path / "fig" / "sepl_class_iou.png").exists() and (tmp_path / "fig" / "sepl_delta_hist.png").exists()
        out = capsys.readouterr().out
        assert "sepl: mIoU" in out and out.count("worst: ") == 2
        assert main(["refine", "--dataset", name, "--seeds", "seeds", "--masks", "sam", "--out", "sepl",
                     "--op-thresh", "0.9"]) == 1
        assert "already exists" in capsys.readouterr().err
        assert main(["import", "cams", "--dataset", name, "--folder", str(seeds)]) == 1
        assert "background threshold" in capsys.readouterr().err
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
