"""SAM 2 / SAM-HQ automatic masks (transformers' Sam2Model / SamHQModel, tiny, random weights):
pre/post-processing against transformers' processors, the pipeline against a one-image
reference built from segment-anything's own amg functions, batching, loading errors."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from sepl.errors import SeplError  # noqa: E402
from sepl.masks import hf_models  # noqa: E402
from sepl.masks.base import matched_fraction  # noqa: E402
from sepl.masks.sam2_auto import HFSamAutoMasks, Sam2Backend, SamHQBackend, build_auto_masks  # noqa: E402

FAMILIES = ["sam2", "samhq"]


@pytest.fixture(scope="module")
def tiny():
    return {f: hf_models.build_tiny(f) for f in FAMILIES}


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:60, :80]
    scene = np.full((60, 80, 3), 30, np.uint8)
    scene[(yy - 30) ** 2 + (xx - 25) ** 2 < 200] = (220, 40, 40)
    scene[10:30, 50:75] = (0, 180, 40)
    return [scene, rng.integers(0, 255, (50, 36, 3), dtype=np.uint8)]


def _processor_inputs(proc, image, points):
    return proc(images=[image], input_points=[[[list(map(float, p))] for p in points]], return_tensors="pt")


def _hf_upscale(family, proc, low, enc):
    """transformers' own post_process_masks (no binarisation) of (P, 3, h, w) low-res logits."""
    if family == "sam2":
        return proc.post_process_masks([low], enc["original_sizes"], binarize=False)[0]
    return proc.post_process_masks([low], enc["original_sizes"], enc["reshaped_input_sizes"], binarize=False)[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_pre_and_post_processing_equal_the_processors(tiny, images, family):
    model, proc = tiny[family]
    be = (Sam2Backend if family == "sam2" else SamHQBackend)(model, proc)
    for im in images:
        points = np.array([[3.5, 7.25], [im.shape[1] - 1.5, 0.5], [10.0, im.shape[0] / 2]])
        enc = _processor_inputs(proc, im, points)
        assert torch.equal(be.pixel_values([im]), enc["pixel_values"])
        mine = torch.as_tensor(be.scale_points(points, im.shape[:2]))
        assert torch.equal(mine, enc["input_points"][0, :, 0].to(mine.dtype))
        low = torch.randn(len(points), 3, 32, 32, generator=torch.Generator().manual_seed(1))
        theirs = _hf_upscale(family, proc, low.clone(), enc)  # (P, 3, H, W)
        ours = be.upscale(low.flatten(0, 1), im.shape[:2]).reshape(theirs.shape)
        assert torch.equal(ours, theirs)
        assert torch.equal(ours > 0, _hf_upscale(family, proc, low.clone(), enc) > 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_encode_decode_equals_the_models_forward(tiny, images, family):
    model, proc = tiny[family]
    be = (Sam2Backend if family == "sam2" else SamHQBackend)(model, proc)
    feats = be.encode(images)
    for im, f in zip(images, feats):
        points = np.array([[5.0, 5.0], [20.0, 12.0]])
        enc = _processor_inputs(proc, im, points)
        with torch.no_grad():
            out = model(pixel_values=enc["pixel_values"], input_points=enc["input_points"], multimask_output=True)
        low, iou = be.decode(f, torch.as_tensor(be.scale_points(points, im.shape[:2])))
        torch.testing.assert_close(low, out.pred_masks[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(iou, out.iou_scores[0], atol=1e-5, rtol=1e-4)


# -- the one-image reference: segment-anything's amg functions, transformers' processor ---------

def reference_auto_masks(image, predict, points_per_side, pred_iou_thresh, stability_score_thresh,
                         stability_score_offset=1.0, box_nms_thresh=0.7, crop_n_layers=0, crop_nms_thresh=0.7,
                         crop_overlap_ratio=512 / 1500, crop_n_points_downscale_factor=1, min_mask_region_area=0):
    """SamAutomaticMaskGenerator.generate, step by step, for one image, with ``predict(crop, points)
    -> (logits (P, 3, h, w) at crop size, iou (P, 3))`` in place of SamPredictor."""
    amg = pytest.importorskip("segment_anything").utils.amg
    from segment_anything import SamAutomaticMaskGenerator
    from torchvision.ops.boxes import batched_nms, box_area

    h, w = image.shape[:2]
    boxes, layers = amg.generate_crop_boxes((h, w), crop_n_layers, crop_overlap_ratio)
    grids = amg.build_all_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
    data = amg.MaskData()
    for box, layer in zip(boxes, layers):
        x0, y0, x1, y1 = box
        crop = image[y0:y1, x0:x1]
        pts = grids[layer] * np.array(crop.shape[:2])[None, ::-1]
        logits, iou = predict(crop, pts)
        d = amg.MaskData(masks=logits.flatten(0, 1), iou_preds=iou.flatten(0, 1),
                         points=torch.as_tensor(pts.repeat(3, axis=0), dtype=torch.float32))
        if pred_iou_thresh > 0:
            d.filter(d["iou_preds"] > pred_iou_thresh)
        d["stability_score"] = amg.calculate_stability_score(d["masks"], 0.0, stability_score_offset)
        if stability_score_thresh > 0:
            d.filter(d["stability_score"] >= stability_score_thresh)
        d["masks"] = d["masks"] > 0
        d["boxes"] = amg.batched_mask_to_box(d["masks"])
        d.filter(~amg.is_box_near_crop_edge(d["boxes"], box, [0, 0, w, h]))
        d["masks"] = amg.uncrop_masks(d["masks"], box, h, w)
        d["rles"] = amg.mask_to_rle_pytorch(d["masks"])
        del d._stats["masks"]
        keep = batched_nms(d["boxes"].float(), d["iou_preds"], torch.zeros_like(d["iou_preds"]), box_nms_thresh)
        d.filter(keep)
        d["boxes"] = amg.uncrop_boxes_xyxy(d["boxes"], box)
        d["points"] = amg.uncrop_points(d["points"], box)
        d["crop_boxes"] = torch.tensor([box for _ in range(len(d["rles"]))])
        data.cat(d)
    if len(boxes) > 1:
        scores = 1 / box_area(data["crop_boxes"])
        data.filter(batched_nms(data["boxes"].float(), scores, torch.zeros_like(scores), crop_nms_thresh))
    data.to_numpy()
    if min_mask_region_area > 0:
        data = SamAutomaticMaskGenerator.postprocess_small_regions(data, min_mask_region_area,
                                                                    max(box_nms_thresh, crop_nms_thresh))
    masks = np.array([amg.rle_to_mask(r) for r in data["rles"]], bool).reshape(-1, h, w)
    return masks, np.asarray(data["iou_preds"], np.float32), np.asarray(data["boxes"], np.float32)


def _synthetic_low(coords, size, low_size):
    """(P, 3, l, l) logits: three discs of growing radius around each point (model-input coords)."""
    ys, xs = torch.meshgrid(torch.arange(low_size, dtype=torch.float32) + 0.5,
                            torch.arange(low_size, dtype=torch.float32) + 0.5, indexing="ij")
    c = coords / size * low_size
    d = ((xs[None] - c[:, 0, None, None]) ** 2 + (ys[None] - c[:, 1, None, None]) ** 2).sqrt()
    radii = torch.tensor([2.0, 5.0, 11.0])
    slopes = torch.tensor([8.0, 1.5, 6.0])
    ripples = 2.5 * torch.sin(xs * 1.9) * torch.cos(ys * 2.3)  # islands and holes near the rims
    return (radii[None, :, None, None] - d[:, None]) * slopes[None, :, None, None] + ripples


def _synthetic_iou(coords):
    k = torch.arange(3, dtype=torch.float32)
    return 0.75 + 0.25 * torch.frac(torch.sin(coords[:, :1] * 12.9898 + coords[:, 1:] * 78.233 + k) * 43758.5)


class _Synthetic:
    """Replaces the mask decoder by point-shaped discs, so the filters have something to filter."""

    def __init__(self, be):
        self.be = be

    def decode(self, features, coords):
        s = self.be.input_size()
        return _synthetic_low(coords, s, s // 4), _synthetic_iou(coords)


CASES = [
    dict(points_per_side=6, pred_iou_thresh=0.85, stability_score_thresh=0.75),
    dict(points_per_side=5, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.5),
    dict(points_per_side=4, pred_iou_thresh=0.8, stability_score_thresh=0.6, crop_n_layers=1,
         crop_n_points_downscale_factor=2),
    dict(points_per_side=6, pred_iou_thresh=0.8, stability_score_thresh=0.6, min_mask_region_area=30),
]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_pipeline_equals_the_one_image_reference(tiny, images, family, case, monkeypatch):
    model, proc = tiny[family]
    params = CASES[case]
    src = HFSamAutoMasks(model, proc, family=family, points_per_batch=7, image_batch=2, **params)
    syn = _Synthetic(src.backend)
    monkeypatch.setattr(src.backend, "decode", syn.decode)

    def predict(crop, pts):  # the processor's coordinates and upscaling, one crop at a time
        enc = _processor_inputs(proc, crop, pts)
        coords = enc["input_points"][0, :, 0].float()
        low = _synthetic_low(coords, src.backend.input_size(), src.backend.input_size() // 4)
        return _hf_upscale(family, proc, low, enc), _synthetic_iou(coords)

    outs = src.generate_batch(images)
    for im, ms in zip(images, outs):
        masks, iou, boxes = reference_auto_masks(im, predict, **params)
        assert len(masks) > 1 and len(ms) == len(masks)
        assert np.array_equal(ms.masks, masks)
        np.testing.assert_array_equal(ms.predicted_iou, iou)
        np.testing.assert_array_equal(ms.boxes, boxes)
        assert ms.source.startswith(("sam2_auto/", "samhq_auto/"))
        if params.get("min_mask_region_area"):  # the clean-up did change masks here
            plain, _, _ = reference_auto_masks(im, predict, **dict(params, min_mask_region_area=0))
            assert len(plain) != len(masks) or not np.array_equal(plain, masks)


@pytest.mark.parametrize("family", FAMILIES)
def test_real_tiny_model_equals_the_reference(tiny, images, family):
    model, proc = tiny[family]
    params = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    src = HFSamAutoMasks(model, proc, family=family, points_per_batch=5, **params)

    def predict(crop, pts):
        enc = _processor_inputs(proc, crop, pts)
        with torch.no_grad():
            out = model(pixel_values=enc["pixel_values"], input_points=enc["input_points"], multimask_output=True)
        return _hf_upscale(family, proc, out.pred_masks[0], enc), out.iou_scores[0]

    for im, ms in zip(images, src.generate_batch(images)):
        masks, iou, _ = reference_auto_masks(im, predict, **params)
        assert len(ms) == len(masks) == 48  # nothing filtered: 16 points x 3 masks
        # batched and single-image encodes may differ in the last float bits: compare as sets
        assert matched_fraction(ms.masks, masks, 0.98) >= 0.95
        np.testing.assert_allclose(np.sort(ms.predicted_iou), np.sort(iou), atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_equals_single_images_and_records_config(tiny, images, family):
    model, proc = tiny[family]
    src = HFSamAutoMasks(model, proc, family=family, points_per_side=4, pred_iou_thresh=0.0,
                         stability_score_thresh=0.0, random_weights=True, model_name="tiny")
    both = src.generate_batch(images)
    for im, ms in zip(images, both):
        one = src.generate(im)
        assert len(one) == len(ms) and matched_fraction(one.masks, ms.masks, 0.98) >= 0.95
        assert ms.masks.shape[1:] == im.shape[:2] and ms.masks.dtype == bool
    cfg = src.config()
    assert cfg["source"] == f"{family}_auto" and cfg["random_weights"] is True and cfg["points_per_side"] == 4


# -- loading -----------------------------------------------------------------------------------

def test_saved_folder_loads_the_same_model(tmp_path, images):
    folder = hf_models.write_tiny("sam2", tmp_path / "sam2")
    a = build_auto_masks("sam2", str(folder), device="cpu", points_per_side=4, pred_iou_thresh=0.0,
                         stability_score_thresh=0.0)
    b = build_auto_masks("sam2", None, device="cpu", random_weights=True, points_per_side=4, pred_iou_thresh=0.0,
                         stability_score_thresh=0.0)
    assert a.name == "sam2_auto/sam2" and not a.random_weights and b.random_weights
    ma, mb = a.generate(images[0]), b.generate(images[0])
    assert len(ma) == len(mb) and matched_fraction(ma.masks, mb.masks, 0.98) >= 0.95
    # the weights file alone, with config.json beside it
    c = build_auto_masks("sam2", str(folder / "model.safetensors"), device="cpu", points_per_side=4)
    assert c.name == "sam2_auto/model"


def test_loading_errors_name_what_is_missing(tmp_path):
    with pytest.raises(SeplError, match="no SAM 2 / 2.1 model given.*sam2.1-hiera"):
        build_auto_masks("sam2", None)
    with pytest.raises(SeplError, match="does not exist"):
        build_auto_masks("sam2", str(tmp_path / "nowhere"))
    with pytest.raises(SeplError, match="from the Hugging Face hub.*hf download"):
        build_auto_masks("sam2", "facebook/sam2.1-hiera-large")
    with pytest.raises(SeplError, match="random weights"):
        build_auto_masks("sam2", "facebook/sam2.1-hiera-large", random_weights=True)
    hq = hf_models.write_tiny("samhq", tmp_path / "hq")
    with pytest.raises(SeplError, match="is a 'sam_hq' model, but SAM 2"):
        build_auto_masks("sam2", str(hq))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SeplError, match="no config.json"):
        build_auto_masks("samhq", str(tmp_path / "empty"))
    (hq / "model.safetensors").unlink()
    with pytest.raises(SeplError, match="no weights"):
        build_auto_masks("samhq", str(hq))
    original = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(2)}}, original)
    with pytest.raises(SeplError, match="facebookresearch/sam2.*own key layout"):
        build_auto_masks("sam2", str(original))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not torch")
    with pytest.raises(SeplError, match="cannot read weights file"):
        build_auto_masks("sam2", str(garbage))
    with pytest.raises(SeplError, match="needs a Sam2Model"):
        m, proc = hf_models.build_tiny("samhq")
        HFSamAutoMasks(m, proc, family="sam2")


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_autocast_runs_and_stays_close(tiny, images, family):
    model, proc = tiny[family]
    kw = dict(family=family, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    a = HFSamAutoMasks(model, proc, **kw).generate(images[0])
    b = HFSamAutoMasks(model, proc, dtype="bfloat16", **kw).generate(images[0])
    assert len(a) == len(b) == 48 and b.masks.dtype == bool
    np.testing.assert_allclose(np.sort(a.predicted_iou), np.sort(b.predicted_iou), atol=0.02)
    assert (a.masks == b.masks).mean() > 0.9
