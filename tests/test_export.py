"""Export of a label field to the VOC layout and FiftyOne's ImageSegmentationDirectory."""

import json

import numpy as np
import pytest
from PIL import Image

from sepl.errors import SeplError
from sepl.labelio import read_label


def _gt(sample):
    return np.asarray(sample.ground_truth.get_mask())


def test_voc_layout_holds_every_label_exactly(synth_dataset, tmp_path):
    from sepl.fo.export import export_segmentation

    res = export_segmentation(synth_dataset, "ground_truth", tmp_path / "voc", val_fraction=0.25, seed=1)
    root = tmp_path / "voc"
    train = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    val = (root / "ImageSets/Segmentation/val.txt").read_text().split()
    trainval = (root / "ImageSets/Segmentation/trainval.txt").read_text().split()
    assert len(val) == 2 and len(train) == 6 and not set(train) & set(val)
    assert sorted(trainval) == sorted(train + val)
    assert res.splits == {"train": train, "val": val} and res.num_classes == 6
    by_stem = {s.filepath.rsplit("/", 1)[1][:-4]: s for s in synth_dataset}
    saw_ignore = False
    for sid in train + val:
        sample = by_stem[sid]
        # JPEGs are copied byte for byte, not re-encoded
        assert (root / "JPEGImages" / f"{sid}.jpg").read_bytes() == open(sample.filepath, "rb").read()
        png = root / "SegmentationClass" / f"{sid}.png"
        with Image.open(png) as im:
            assert im.mode == "P"  # VOC's palette PNGs: index = class
        label = read_label(png)
        np.testing.assert_array_equal(label, _gt(sample))
        saw_ignore |= bool((label == 255).any())
    assert saw_ignore, "the synthetic GT has a 255 band; the export must keep it"
    manifest = json.loads((root / "sepl_export.json").read_text())
    assert manifest["classes"][1] == "disc" and manifest["ignore_index"] == 255
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".voc")], "temporary folder left behind"


def test_fiftyone_layout_loads_back_with_fiftyones_importer(synth_dataset, tmp_path):
    import fiftyone as fo

    from sepl.fo.export import export_segmentation

    export_segmentation(synth_dataset, "ground_truth", tmp_path / "fo", format="fiftyone", val_fraction=0.25)
    by_name = {s.filepath.rsplit("/", 1)[1]: s for s in synth_dataset}
    total = 0
    for split in ("train", "val"):
        back = fo.Dataset.from_dir(dataset_dir=str(tmp_path / "fo" / split),
                                   dataset_type=fo.types.ImageSegmentationDirectory, label_field="gt")
        try:
            for s in back:
                mask = np.asarray(s.gt.get_mask())
                assert mask.ndim == 2, "masks must load as indices, not colours"
                np.testing.assert_array_equal(mask, _gt(by_name[s.filepath.rsplit("/", 1)[1]]))
                total += 1
        finally:
            back.delete()
    assert total == len(synth_dataset)


def test_split_by_tags_skips_untagged(synth_dataset, tmp_path):
    from sepl.fo.export import export_segmentation

    ids = synth_dataset.values("id")
    synth_dataset.select(ids[:5]).tag_samples("train")
    synth_dataset.select(ids[5:7]).tag_samples("val")
    res = export_segmentation(synth_dataset, "ground_truth", tmp_path / "t", split_tags=["train", "val"])
    assert (len(res.splits["train"]), len(res.splits["val"]), res.skipped) == (5, 2, 1)
    assert len(list((tmp_path / "t" / "JPEGImages").iterdir())) == 7
    with pytest.raises(SeplError, match="carries any of the tags"):
        export_segmentation(synth_dataset, "ground_truth", tmp_path / "u", split_tags=["nope"])


def test_non_jpeg_images_are_reencoded_for_voc(dataset, tmp_path):
    import fiftyone as fo

    from sepl.fo.convert import set_mask_targets, to_segmentation
    from sepl.fo.export import export_segmentation

    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / f"im{k}.png")
    # two files with the same stem in different folders must not collide
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "sub" / "im0.png")
    paths = [tmp_path / "im0.png", tmp_path / "im1.png", tmp_path / "sub" / "im0.png"]
    dataset.add_samples([fo.Sample(filepath=str(p), gt=to_segmentation(np.full((20, 30), k % 2, np.uint8)))
                         for k, p in enumerate(paths)])
    set_mask_targets(dataset, "gt", {0: "background", 1: "thing"})
    res = export_segmentation(dataset, "gt", tmp_path / "out")
    stems = res.splits["train"]
    assert len(set(stems)) == 3
    for s in stems:
        with Image.open(tmp_path / "out" / "JPEGImages" / f"{s}.jpg") as im:
            assert im.format == "JPEG" and im.size == (30, 20)


def test_bad_input_is_refused_and_nothing_is_overwritten(synth_dataset, tmp_path):
    from sepl.fo.convert import set_mask_targets
    from sepl.fo.export import export_segmentation

    with pytest.raises(SeplError, match="empty"):
        export_segmentation(synth_dataset.limit(0), "ground_truth", tmp_path / "e")
    assert not (tmp_path / "e").exists()
    with pytest.raises(SeplError, match="no field 'nope'"):
        export_segmentation(synth_dataset, "nope", tmp_path / "e")

    # an existing folder with the user's files: refused, even with overwrite, and kept as is
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(SeplError, match="already exists and is not empty"):
        export_segmentation(synth_dataset, "ground_truth", mine)
    with pytest.raises(SeplError, match="sepl did not write"):
        export_segmentation(synth_dataset, "ground_truth", mine, overwrite=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

    # an earlier export: refused without overwrite, replaced (no stale files) with it
    out = tmp_path / "out"
    export_segmentation(synth_dataset, "ground_truth", out, val_fraction=0.5)
    with pytest.raises(SeplError, match="already exists"):
        export_segmentation(synth_dataset, "ground_truth", out)
    export_segmentation(synth_dataset, "ground_truth", out, overwrite=True)
    assert not (out / "ImageSets/Segmentation/val.txt").exists()

    # classes outside the mask targets: the error names the sample and the values; nothing written
    set_mask_targets(synth_dataset, "ground_truth", {0: "background", 1: "disc", 2: "square"})
    with pytest.raises(SeplError, match=r"outside the 3 classes.*\(fix: add those classes") as e:
        export_segmentation(synth_dataset, "ground_truth", tmp_path / "bad")
    assert e.value.sample and ".jpg" in e.value.sample
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad")]
    set_mask_targets(synth_dataset, "ground_truth", {})
    synth_dataset.default_mask_targets = {}
    synth_dataset.save()
    with pytest.raises(SeplError, match="no mask targets"):
        export_segmentation(synth_dataset, "ground_truth", tmp_path / "bad")


def test_cli_export(synth_dataset, tmp_path, capsys):
    from sepl.cli import main

    out = tmp_path / "cli"
    assert main(["export", "--dataset", synth_dataset.name, "--field", "ground_truth", "--out", str(out),
                 "--val-fraction", "0.25"]) == 0
    assert "train: 6, val: 2" in capsys.readouterr().out
    assert main(["export", "--dataset", synth_dataset.name, "--field", "ground_truth", "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["export", "--dataset", "no_such_dataset_xyz", "--field", "g", "--out", str(tmp_path / "x")]) == 1
