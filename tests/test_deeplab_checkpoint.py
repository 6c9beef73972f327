"""DeepLab checkpoint I/O: the resumable dict holds only tensors and plain values, so it reads
back with ``weights_only=True`` and restores model, optimizer and scheduler exactly."""

import pytest

from sepl.errors import SeplError

torch = pytest.importorskip("torch")


def _setup(cfg):
    from sepl.deeplab.models import build_model
    from sepl.deeplab.train import build_optimizer

    torch.manual_seed(0)
    model, _ = build_model("deeplabv3_tiny", 3)
    optimizer, scheduler = build_optimizer(model, cfg, total_iters=10)
    return model, optimizer, scheduler


def test_checkpoint_round_trip_weights_only(tmp_path):
    from sepl.deeplab.config import TrainConfig
    from sepl.deeplab.train import checkpoint_state, criterion, load_checkpoint, resume_from, save_checkpoint

    cfg = TrainConfig(data_dir=str(tmp_path), out_dir=tmp_path / "run", model="deeplabv3_tiny", num_classes=3)
    model, optimizer, scheduler = _setup(cfg)
    x, y = torch.randn(2, 3, 33, 33), torch.randint(0, 3, (2, 33, 33))
    for _ in range(2):  # momentum buffers and a stepped schedule to restore
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
        scheduler.step()
    from sepl.deeplab.train import _plain_args

    args = _plain_args(cfg, 3)
    assert isinstance(args["out_dir"], str)  # a Path in the config is stored as a string
    state = checkpoint_state(model, optimizer, scheduler, None, 4, args, num_classes=3, classes=["a", "b", "c"],
                             best_miou=0.5, miou=0.25, backbone_init="random")
    path = tmp_path / "checkpoint.pth"
    save_checkpoint(state, path)
    raw = torch.load(path, map_location="cpu", weights_only=True)  # what the safe loader accepts
    assert raw["epoch"] == 4 and raw["args"]["model"] == "deeplabv3_tiny" and raw["scaler"] is None

    model2, optimizer2, scheduler2 = _setup(cfg)
    with torch.no_grad():
        for p in model2.parameters():
            p.add_(1.0)
    ckpt = resume_from(path, model2, optimizer2, scheduler2, None, cfg, 3)
    assert ckpt["best_miou"] == 0.5 and ckpt["classes"] == ["a", "b", "c"]
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert scheduler2.last_epoch == scheduler.last_epoch == 2
    assert optimizer2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    m1 = optimizer.state_dict()["state"]
    m2 = optimizer2.state_dict()["state"]
    assert m1.keys() == m2.keys() and all(torch.equal(m1[k]["momentum_buffer"], m2[k]["momentum_buffer"]) for k in m1)

    other = TrainConfig(data_dir=str(tmp_path), out_dir=str(tmp_path), model="deeplabv3_resnet50", num_classes=3)
    with pytest.raises(SeplError, match="not a deeplabv3_resnet50"):
        resume_from(path, model2, optimizer2, scheduler2, None, other, 3)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SeplError, match="cannot read checkpoint|refused without running"):
        load_checkpoint(bad)
    save_checkpoint({"weights": torch.zeros(1)}, bad)
    with pytest.raises(SeplError, match="not a sepl DeepLab checkpoint"):
        load_checkpoint(bad)
