"""sepl's FiftyOne models under ``apply_model``: batches honoured, data-loader workers,
``needs_fields`` of SEPLModel, run records, and a zoo model's masks refined like sepl's."""

from typing import List

import numpy as np
import pytest

import fiftyone as fo

from sepl.errors import SeplError
from sepl.masks.base import MaskSet


class RecordingSource:
    """A mask source that records the batches it gets: one mask = the image's top half."""

    name = "recording"
    is_sam = False

    def __init__(self, fail: bool = False):
        self.batches: List[List[tuple]] = []
        self.fail = fail

    def generate(self, image):
        return self.generate_batch([image])[0]

    def generate_batch(self, images):
        if self.fail:
            raise SeplError("this source always fails")
        self.batches.append([im.shape for im in images])
        out = []
        for im in images:
            m = np.zeros((1,) + im.shape[:2], bool)
            m[0, : im.shape[0] // 2] = True
            out.append(MaskSet(m, source=self.name, predicted_iou=np.array([float(im.mean())])))
        return out


@pytest.fixture
def mixed_sizes(synth_dataset, tmp_path):
    """The 8 generated scenes, the last three resized, so batches mix image sizes."""
    from PIL import Image

    for k, s in enumerate(synth_dataset.skip(5)):
        path = tmp_path / f"resized{k}.jpg"
        Image.open(s.filepath).resize((120 + 10 * k, 90)).save(path)
        s.filepath = str(path)
        s.save()
    synth_dataset.compute_metadata(overwrite=True)
    return synth_dataset


@pytest.mark.parametrize("num_workers", [0, 1])
def test_mask_source_model_batches_and_workers(mixed_sizes, num_workers):
    from sepl.fo.convert import load_masks
    from sepl.fo.masks import MaskSourceModel
    from sepl.labelio import read_image

    src = RecordingSource()
    mixed_sizes.apply_model(MaskSourceModel(src), "m", batch_size=3, num_workers=num_workers)
    assert [len(b) for b in src.batches] == [3, 3, 2]
    assert len({shape for b in src.batches for shape in b}) > 1  # sizes mixed within the run
    for s in mixed_sizes:
        im = read_image(s.filepath)  # sepl's reader: same pixels as sepl's own commands
        (det,) = s.m.detections
        assert det.confidence == pytest.approx(float(im.mean()))
        assert load_masks(s, "m").shape == (1,) + im.shape[:2]
    info = mixed_sizes.get_run_info("sepl_m").config.serialize()
    assert info["method"] == "apply_model:MaskSourceModel" and info["source"] == "recording"


def test_failed_apply_model_leaves_no_record(mixed_sizes):
    from sepl.fo.masks import MaskSourceModel

    with pytest.raises(SeplError, match="always fails"):
        mixed_sizes.apply_model(MaskSourceModel(RecordingSource(fail=True)), "bad", batch_size=2,
                                num_workers=0, skip_failures=False)
    assert not mixed_sizes.has_run("sepl_bad") and not mixed_sizes.has_field("bad")


def test_deeplab_model_batches(mixed_sizes):
    from sepl.fo.deeplab import DeepLabModel

    class Predictor:
        classes = ["background", "a", "b"]
        mode, crop_size = "whole", 321

        def predict(self, image):
            return np.full(image.shape[:2], 1, np.uint8)

    class Counting(DeepLabModel):
        sizes: List[int] = []

        def predict_all(self, args):
            self.sizes.append(len(args))
            return super().predict_all(args)

    model = Counting(Predictor(), checkpoint="/x/model_best.pth")
    mixed_sizes.apply_model(model, "dl", batch_size=4, num_workers=0)
    assert model.sizes == [4, 4]
    assert mixed_sizes.mask_targets["dl"] == {0: "background", 1: "a", 2: "b"}
    assert mixed_sizes.get_run_info("sepl_dl").config.checkpoint == "/x/model_best.pth"


def test_grounded_model_batches(mixed_sizes):
    from sepl.fo.convert import to_classifications
    from sepl.fo.grounded import GroundedSAMModel

    for s in mixed_sizes:
        s["image_labels"] = to_classifications(["person"])
        s.save()

    class Pipeline:
        class_names = ["background", "person"]

    class Counting(GroundedSAMModel):
        sizes: List[int] = []

        def predict_all(self, args, samples=None):  # the pipeline's part is tested elsewhere
            self.sizes.append(len(args))
            assert [self._tags(s) for s in samples] == [["person"]] * len(args)
            return [dict(labels=fo.Segmentation(mask=np.zeros(a.shape[:2], np.uint8)), detections=fo.Detections())
                    for a in args]

    model = Counting(Pipeline())
    mixed_sizes.apply_model(model, "g", batch_size=5, num_workers=0)
    assert model.sizes == [5, 3] and mixed_sizes.count("g_labels") == 8
    info = mixed_sizes.get_run_info("sepl_g_labels").config.serialize()
    assert info["fields"] == ["g_labels", "g_detections"] and info["tags_field"] == "image_labels"
    assert mixed_sizes.mask_targets["g_labels"] == {0: "background", 1: "person"}


@pytest.fixture
def refinable(synth_dataset):
    """synth_dataset plus seeds (GT without 255, shifted) and masks (GT components)."""
    from sepl.fo.convert import masks_to_detections, set_mask_targets, to_segmentation
    from sepl.synth import SYNTH_CLASSES

    for s in synth_dataset.iter_samples(autosave=True):
        gt = s.ground_truth.mask
        seed = np.roll(np.where(gt == 255, 0, gt), 4, axis=1).astype(np.uint8)
        s["seeds"] = to_segmentation(seed)
        masks = np.stack([gt == c for c in np.unique(gt) if c not in (0, 255)] + [np.ones(gt.shape, bool)])
        s["masks"] = masks_to_detections(masks)
    set_mask_targets(synth_dataset, "seeds", dict(enumerate(SYNTH_CLASSES)))
    return synth_dataset


def test_sepl_model_fields_batches_and_record(refinable):
    import sepl
    from sepl.fo import refine
    from sepl.fo.convert import load_label_map

    ds = refinable
    # no fields anywhere: refused before the first sample, nothing written, nothing recorded
    with pytest.raises(SeplError, match="seed_field and masks_field"):
        ds.apply_model(sepl.SEPLModel(), label_field="none")
    assert not ds.has_field("none") and not ds.has_run("sepl_none")
    with pytest.raises(SeplError, match="unknown arguments"):
        ds.apply_model(sepl.SEPLModel(), label_field="none", seed_field="seeds", mask_field="masks")
    # fields given to the constructor only (apply_model passes none): all 8 written, in batches
    model = sepl.SEPLModel(seed_field="seeds", masks_field="masks")
    calls = []
    orig = model.predict_all
    model.predict_all = lambda args, samples=None: calls.append(len(args)) or orig(args, samples)
    ds.apply_model(model, label_field="by_model", batch_size=3)
    assert ds.count("by_model") == len(ds) == 8 and calls == [3, 3, 2]
    refine(ds, "seeds", "masks", "by_refine")
    for s in ds:
        assert np.array_equal(load_label_map(s, "by_model"), load_label_map(s, "by_refine"))
    assert ds.mask_targets["by_model"] == ds.mask_targets["seeds"]
    cfg = ds.get_run_info("sepl_by_model").config.serialize()
    assert cfg["method"] == "apply_model:SEPLModel" and cfg["seed_field"] == "seeds" and cfg["mode"] == "paper"
    # apply_model's arguments override the constructor's; rerunning into the field re-records it
    ds.apply_model(model, label_field="by_model", seed_field="seeds", masks_field="by_refine_masks")
    assert ds.get_run_info("sepl_by_model").config.masks_field == "by_refine_masks"


class ZooLikeSAM:
    """What FiftyOne's SAM zoo models store in automatic mode (``_forward_pass_auto`` in
    fiftyone/utils/sam.py): one ``Detection.from_mask(mask, score=predicted_iou,
    stability=stability_score)`` per record of segment-anything's automatic generator."""

    def __new__(cls, records):
        import fiftyone.core.models as fom

        class Model(fom.Model):
            media_type = "image"
            ragged_batches = False
            transforms = None
            preprocess = False

            def predict(self, img):
                return fo.Detections(detections=[
                    fo.Detection.from_mask(mask=r["segmentation"], score=r["predicted_iou"],
                                           stability=r["stability_score"]) for r in records(img)])

            def predict_all(self, imgs):
                return [self.predict(im) for im in imgs]

        return Model()


def _amg_records(img):
    """SamAutomaticMaskGenerator-style records made from the image's colours (and a box)."""
    masks = [img[..., c] > 128 for c in range(3)] + [img.mean(-1) < 60]
    box = np.zeros(img.shape[:2], bool)
    box[10:50, 20:90] = True
    masks.append(box)
    return [{"segmentation": m, "predicted_iou": 0.9 - 0.05 * k, "stability_score": 0.95}
            for k, m in enumerate(masks) if m.any()]


def test_zoo_sam_output_refines_like_sepl_masks(refinable):
    from sepl.fo import refine
    from sepl.fo.convert import load_label_map, load_masks
    from sepl.fo.masks import generate_masks, to_detections
    from sepl.labelio import read_image

    ds = refinable
    name = "segment-anything-vitb-torch"
    summary = generate_masks(ds, "zoo_masks", source=f"zoo:{name}", mask_source=ZooLikeSAM(_amg_records),
                             batch_size=3)
    assert summary["processed"] == len(ds) and not summary["failed"]
    cfg = ds.get_run_info("sepl_zoo_masks").config.serialize()
    assert cfg["method"] == "masks" and cfg["source"] == f"zoo:{name}"
    # the same masks as sepl stores them
    for s in ds.iter_samples(autosave=True):
        recs = _amg_records(read_image(s.filepath))
        ms = MaskSet(np.stack([r["segmentation"] for r in recs]), source="sam_auto",
                     predicted_iou=np.array([r["predicted_iou"] for r in recs]),
                     stability_score=np.array([r["stability_score"] for r in recs]))
        s["own_masks"] = to_detections(ms)
    for s in ds:
        assert np.array_equal(load_masks(s, "zoo_masks"), load_masks(s, "own_masks"))
    for mode in ("paper", "official"):
        refine(ds, "seeds", "zoo_masks", f"from_zoo_{mode}", mode=mode)
        refine(ds, "seeds", "own_masks", f"from_own_{mode}", mode=mode)
        changed = 0
        for s in ds:
            a, b = load_label_map(s, f"from_zoo_{mode}"), load_label_map(s, f"from_own_{mode}")
            assert np.array_equal(a, b)
            changed += int((a != load_label_map(s, "seeds")).any())
            da, db = s[f"from_zoo_{mode}_masks"].detections, s[f"from_own_{mode}_masks"].detections
            assert [(d.label, d.selected) for d in da] == [(d.label, d.selected) for d in db]
        assert changed  # the masks did change the seeds
    # a rerun resumes: nothing left to do, the model is not even needed
    again = generate_masks(ds, "zoo_masks", source=f"zoo:{name}", mask_source=ZooLikeSAM(_amg_records))
    assert again["processed"] == 0 and again["skipped"] == len(ds)


def test_zoo_model_offline_and_unknown_names(refinable):
    import fiftyone.zoo as foz

    from sepl.fo.masks import generate_masks

    name = "segment-anything-vitb-torch"
    if foz.is_zoo_model_downloaded(name):
        pytest.skip(f"{name} is downloaded here")
    with pytest.raises(SeplError) as e:
        generate_masks(refinable, "z", source=f"zoo:{name}")
    msg = str(e.value)
    assert f"'{name}' is not downloaded" in msg and fo.config.model_zoo_dir in msg
    assert "sam_vit_b_01ec64.pth" in msg and "--download" in msg
    assert not refinable.has_run("sepl_z") and not refinable.has_field("z")
    with pytest.raises(SeplError, match="segment-anything-vitb-torch") as e:
        generate_masks(refinable, "z", source="zoo:segment-anything-vitb16-image-torch")
    assert "is not a model of FiftyOne" in str(e.value) and not refinable.has_run("sepl_z")


def test_cli_zoo_model_offline(refinable, capsys):
    import fiftyone.zoo as foz

    from sepl.cli import main

    if foz.is_zoo_model_downloaded("segment-anything-vitb-torch"):
        pytest.skip("the zoo model is downloaded here")
    refinable.persistent = True
    assert main(["masks", "--dataset", refinable.name, "--zoo-model", "segment-anything-vitb-torch",
                 "--out-field", "z"]) == 1
    err = capsys.readouterr().err
    assert "not downloaded" in err and "fiftyone zoo models download segment-anything-vitb-torch" in err


def test_operator_takes_a_zoo_model(refinable, monkeypatch, tmp_path):
    """"Generate masks" with source "zoo": the form lists the zoo's SAMs; offline it says why."""
    from pathlib import Path

    import fiftyone.operators as foo
    import fiftyone.zoo as foz

    if foz.is_zoo_model_downloaded("segment-anything-vitb-torch"):
        pytest.skip("the zoo model is downloaded here")
    (tmp_path / "sepl").symlink_to(Path(__file__).resolve().parents[1], target_is_directory=True)
    monkeypatch.setattr(fo.config, "plugins_dir", str(tmp_path))
    params = dict(source="zoo", zoo_model="segment-anything-vitb-torch", out_field="z", delegate=False)
    from fiftyone.operators.executor import ExecutionError

    with pytest.raises(ExecutionError, match="'segment-anything-vitb-torch' is not downloaded"):
        foo.execute_operator("@sepl/sepl/generate_masks", ctx=dict(dataset=refinable, view=refinable.view(),
                                                                   params=params))
    assert not refinable.has_run("sepl_z")
