"""DeepLab building blocks: paired transforms, poly schedule, builders, sliding inference."""

import numpy as np
import pytest
import torch

from sepl.errors import SeplError


def _coded_pair(h=30, w=40):
    """An image whose red channel encodes the label, so pairing can be checked after geometry."""
    rng = np.random.default_rng(0)
    label = np.kron(rng.integers(0, 5, (h // 10, w // 10)), np.ones((10, 10), int)).astype(np.uint8)
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = label * 40
    image[..., 1] = np.arange(w)[None] * 5  # tells a flip apart
    return image, label


def test_transforms_keep_image_and_label_aligned():
    from sepl.deeplab import transforms as T

    image, label = _coded_pair()
    img, tgt = T.to_tensors(image, label)
    torch.manual_seed(0)
    import random

    random.seed(0)
    tf = T.Compose([T.RandomScale(0.5, 2.0), T.RandomCrop(24), T.RandomHorizontalFlip(1.0)])
    for _ in range(10):
        a, b = tf(img, tgt)
        assert a.shape == (3, 24, 24) and b.shape == (24, 24) and b.dtype == torch.int64
        valid = b != 255
        # nearest-neighbour labels only take original values
        assert set(b[valid].unique().tolist()) <= set(np.unique(label).tolist())
        # away from block edges the image's red channel still says the label (bilinear blurs edges)
        red = a[0].float() / 40
        interior = valid & (torch.nn.functional.max_pool2d(b[None, None].float(), 3, 1, 1)[0, 0]
                            == -torch.nn.functional.max_pool2d(-b[None, None].float(), 3, 1, 1)[0, 0])
        assert torch.allclose(red[interior], b[interior].float(), atol=0.3)


def test_crop_pads_label_with_ignore_and_flip_flips_both():
    from sepl.deeplab import transforms as T

    image, label = _coded_pair(10, 10)
    img, tgt = T.to_tensors(image, label)
    a, b = T.RandomCrop(16)(img, tgt)
    assert (b[10:, :] == 255).all() and (b[:, 10:] == 255).all() and (a[:, 10:, :] == 0).all()
    assert torch.equal(b[:10, :10], tgt)
    fa, fb = T.RandomHorizontalFlip(1.0)(img, tgt)
    assert torch.equal(fb, tgt.flip(-1)) and torch.equal(fa[1], img[1].flip(-1))
    n, _ = T.Normalize()(img, tgt)
    assert n.dtype == torch.float32 and abs(float(n[1, 0, 0]) - (0 - 0.456) / 0.224) < 1e-5


def test_poly_schedule():
    from sepl.deeplab.train import poly_lambda

    f = poly_lambda(100, 0.9)
    assert f(0) == 1.0 and f(100) == 0.0 and f(200) == 0.0
    assert f(50) == pytest.approx(0.5 ** 0.9)


def test_tiny_model_shapes_and_backbone_weights_round_trip(tmp_path):
    from sepl.deeplab.models import build_model

    model, init = build_model("deeplabv3_tiny", 4, aux_loss=True)
    assert init == "tiny (random)"
    out = model.eval()(torch.zeros(1, 3, 33, 47))
    assert out["out"].shape == (1, 4, 33, 47) and out["aux"].shape == (1, 4, 33, 47)
    # a full checkpoint dict (as sepl writes) is accepted as a backbone source
    torch.save({"model": model.state_dict()}, tmp_path / "ck.pth")
    other, init = build_model("deeplabv3_tiny", 7, backbone_weights=str(tmp_path / "ck.pth"))
    for k, v in other.backbone.state_dict().items():
        assert torch.equal(v, model.backbone.state_dict()[k])
    with pytest.raises(SeplError, match="not found"):
        build_model("deeplabv3_tiny", 4, backbone_weights=str(tmp_path / "nope.pth"))
    with pytest.raises(SeplError, match="unknown model"):
        build_model("deeplabv3_vgg", 4)


def test_resnet50_loads_local_imagenet_weights_or_warns_random(tmp_path, monkeypatch, caplog):
    """The real torchvision builder: a local ImageNet ResNet-50 file lands in the backbone
    (fc dropped); with none (and an empty hub cache) the model is random and says so."""
    import torchvision

    from sepl.deeplab.models import build_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with caplog.at_level("WARNING", logger="sepl.deeplab"):
        _, init = build_model("deeplabv3_resnet50", 3)
    assert init == "random" and "RANDOM weights" in caplog.text
    torch.manual_seed(1)
    resnet = torchvision.models.resnet50()
    torch.save(resnet.state_dict(), tmp_path / "resnet50.pth")
    model, init = build_model("deeplabv3_resnet50", 3, backbone_weights=str(tmp_path / "resnet50.pth"))
    assert init.endswith("resnet50.pth")
    assert torch.equal(model.backbone.layer4[2].conv3.weight, resnet.layer4[2].conv3.weight)
    # weights of another architecture are refused, not half-loaded
    tiny, _ = build_model("deeplabv3_tiny", 3)
    torch.save(tiny.state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(SeplError, match="do not fit"):
        build_model("deeplabv3_resnet50", 3, backbone_weights=str(tmp_path / "tiny.pth"))


def test_sliding_window_covers_the_image():
    from sepl.deeplab.models import build_model
    from sepl.deeplab.predict import _starts, predict_logits

    assert _starts(100, 40, 26) == [0, 26, 52, 60]
    assert _starts(30, 40, 26) == [0] and _starts(40, 40, 26) == [0]
    torch.manual_seed(0)
    model, _ = build_model("deeplabv3_tiny", 3)
    model.eval()
    x = torch.randn(3, 50, 70)
    with torch.inference_mode():
        whole = predict_logits(model, x, "whole")
        slide = predict_logits(model, x, "slide", crop_size=32, stride=20)
        one = predict_logits(model, x, "slide", crop_size=70, stride=70)  # pads 50 -> 70 rows
        exact = predict_logits(model, x[:, :50, :50], "slide", crop_size=50)
    assert slide.shape == whole.shape == one.shape == (3, 50, 70)
    # one window that is the whole image is the whole-image pass
    torch.testing.assert_close(exact, predict_logits(model, x[:, :50, :50], "whole"))
    assert torch.isfinite(slide).all()
    with pytest.raises(SeplError, match="unknown inference mode"):
        predict_logits(model, x, "tiles")
