"""One device resolver for all of sepl: auto picks what is there, an unusable name is a
SeplError with the fix, and every model-running module resolves through it."""

import pytest

from sepl.errors import SeplError

torch = pytest.importorskip("torch")

from sepl.device import resolve_device  # noqa: E402


def test_auto_and_explicit_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for name in ("auto", None, ""):
        assert resolve_device(name) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")  # CUDA first


def test_unusable_devices_are_clear_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(SeplError, match="CUDA is not available") as e:
        resolve_device("cuda")
    assert "--device auto" in str(e.value)
    with pytest.raises(SeplError, match="CUDA is not available"):
        resolve_device("cuda:1")
    with pytest.raises(SeplError, match="MPS is not available"):
        resolve_device("mps")
    with pytest.raises(SeplError, match="not a device"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(SeplError, match="has 2 CUDA device"):
        resolve_device("cuda:2")


def test_every_module_uses_the_one_resolver(monkeypatch):
    """The old per-module names are thin aliases: they agree with sepl.device, errors included."""
    from sepl.cam.train import resolve_device as cam
    from sepl.grounded.pipeline import resolve_device as grounded
    from sepl.masks.runtime import resolve_device as masks

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert cam("auto") == masks("auto") == torch.device("mps") and grounded("auto") == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for alias in (cam, masks, grounded):
        assert str(alias("auto")) == "cpu"
        with pytest.raises(SeplError, match="CUDA is not available"):
            alias("cuda")


def test_deeplab_predict_and_train_resolve_through_it(monkeypatch, tmp_path):
    from sepl.deeplab import predict
    from sepl.deeplab.config import TrainConfig
    from sepl.deeplab.models import build_model
    from sepl.deeplab.train import save_checkpoint, train

    model, _ = build_model("deeplabv3_tiny", 3)
    path = tmp_path / "best.pth"
    save_checkpoint(dict(model=model.state_dict(), num_classes=3,
                         args=dict(model="deeplabv3_tiny", num_classes=3, aux_loss=False)), path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    loaded, _ = predict.load_checkpoint(path)  # auto -> cpu here
    assert next(loaded.parameters()).device == torch.device("cpu")
    with pytest.raises(SeplError, match="CUDA is not available"):
        predict.load_checkpoint(path, device="cuda")
    cfg = TrainConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "run"), num_classes=3, device="cuda")
    with pytest.raises(SeplError, match="CUDA is not available"):  # before any data is read
        train(cfg, verbose=False)
