"""HFPL losses and CAM -> seed post-processing (pure tensor/array code, fast)."""


import numpy as np
import pytest
import torch

from sepl.cam.infer import cam_heatmap, cams_to_seed, compute_cams, normalize_cams
from sepl.cam.losses import (
    feature_similarity_loss,
    feature_similarity_loss_allpairs,
    gap_bce_loss,
    hfpl_loss,
    importance_sampling_loss,
    normalized_cam_targets,
    sample_pixels,
)
from sepl.errors import SeplError


def _inputs(seed=0, n=2, k=4, h=11, w=9):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, h, w, generator=g)
    image[:, :, : h // 2] *= 0.2  # a colour edge, so both signs of s occur
    y = torch.rand(n, k, h, w, generator=g)
    return image, y


def test_windowed_fs_loss_equals_all_pairs_when_window_covers_grid():
    image, y = _inputs()
    ref = feature_similarity_loss_allpairs(image, y, mu=2.5, sigma=2.0)
    win = feature_similarity_loss(image, y, mu=2.5, sigma=2.0, radius=100)
    assert win.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-7)
    # gradients agree too (the windowed loss is what training backpropagates)
    ya = y.clone().requires_grad_(True)
    yb = y.clone().requires_grad_(True)
    feature_similarity_loss_allpairs(image, ya, sigma=2.0).backward()
    feature_similarity_loss(image, yb, sigma=2.0, radius=100).backward()
    assert torch.allclose(ya.grad, yb.grad, rtol=1e-4, atol=1e-7)


def test_windowed_fs_loss_at_three_sigma_is_close_to_all_pairs():
    image, y = _inputs(seed=1, h=24, w=20)
    ref = feature_similarity_loss_allpairs(image, y, sigma=2.0).item()
    win = feature_similarity_loss(image, y, sigma=2.0).item()  # radius ceil(3 sigma) = 6
    assert abs(win - ref) <= 0.01 * abs(ref)
    # the truncation error shrinks with the radius
    errs = [abs(feature_similarity_loss(image, y, sigma=2.0, radius=r).item() - ref) for r in (2, 4, 6, 9)]
    assert errs == sorted(errs, reverse=True)


def test_fs_loss_sign_rewards_edges_and_smoothness():
    """Similar colours with different predictions cost; different colours with different predictions pay."""
    h, w = 8, 8
    flat = torch.full((1, 3, h, w), 0.5)
    edge = flat.clone()
    edge[:, :, :, w // 2:] = 1.0
    edge[:, :, :, : w // 2] = 0.0
    y = torch.zeros(1, 2, h, w)
    y[:, 0, :, : w // 2] = 1
    y[:, 1, :, w // 2:] = 1
    assert feature_similarity_loss(flat, y).item() > 0
    assert feature_similarity_loss(edge, y).item() < 0
    assert feature_similarity_loss(flat, torch.ones(1, 2, h, w)).item() == pytest.approx(0, abs=1e-6)


def test_importance_sampling_follows_sigmoid_and_backprops_through_samples():
    z = torch.full((1, 2, 4, 4), -8.0)
    z[0, 0, 1, 2] = 8.0  # class 0: one confident pixel
    g = torch.Generator().manual_seed(0)
    s = sample_pixels(z, 2000, g)
    assert s.shape == (1, 2, 2000)
    # probability of the hot pixel: (sig(8)+1e-5) / (sig(8) + 15 sig(-8) + 16e-5)
    p = (torch.sigmoid(torch.tensor(8.0)) + 1e-5) / (torch.sigmoid(torch.tensor(8.0)) + 15 * torch.sigmoid(torch.tensor(-8.0)) + 16e-5)
    assert (s[0, 0] == 8.0).float().mean().item() == pytest.approx(p.item(), abs=0.01)
    # class 1 is flat: uniform draws, every pixel reached
    z2 = torch.randn(1, 1, 3, 3, requires_grad=True)
    loss = importance_sampling_loss(z2, torch.ones(1, 1), 50, torch.Generator().manual_seed(1))
    loss.backward()
    assert (z2.grad != 0).sum() > 1 and torch.isfinite(loss)


def test_importance_sampling_pushes_absent_class_hotspot_down():
    z = torch.zeros(1, 1, 5, 5)
    z[0, 0, 2, 2] = 5.0
    z.requires_grad_(True)
    importance_sampling_loss(z, torch.zeros(1, 1), 20, torch.Generator().manual_seed(0)).backward()
    assert z.grad[0, 0, 2, 2] > 0  # gradient descent lowers the absent class's peak


def test_hfpl_loss_terms_and_normalised_targets():
    z = torch.randn(2, 3, 6, 6, requires_grad=True)
    labels = torch.tensor([[1.0, 0, 1], [0, 0, 0]])
    y = normalized_cam_targets(z, labels)
    assert y.shape == (2, 4, 6, 6) and y.min() >= 0 and y.max() <= 1
    assert torch.all(y[1, 1:] == 0) and torch.all(y[1, 0] == 1)  # an unlabelled image is all background
    out = hfpl_loss(z, labels, torch.rand(2, 3, 48, 48), generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "gap", "is", "fs"}
    assert out["loss"].item() == pytest.approx(0.8 * out["gap"].item() + 0.2 * out["is"].item() + out["fs"].item(), rel=1e-5)
    gap_only = hfpl_loss(z, labels, importance_sampling=False, feature_similarity=False)
    assert set(gap_only) == {"loss", "gap"} and gap_only["loss"].item() == pytest.approx(gap_bce_loss(z, labels).item())
    out["loss"].backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_seed_keeps_only_labelled_classes_and_background_modes():
    cams = np.zeros((3, 4, 6), np.float32)
    cams[0, :, :2] = 5.0      # class 1 on the left
    cams[1, :, 2:4] = 3.0     # class 2 in the middle
    cams[2, :, 4:] = 9.0      # class 3 on the right, but not labelled
    seed = cams_to_seed(cams, [1, 2])
    assert set(np.unique(seed)) == {0, 1, 2}
    assert np.all(seed[:, :2] == 1) and np.all(seed[:, 2:4] == 2) and np.all(seed[:, 4:] == 0)
    assert np.all(cams_to_seed(cams, []) == 0)  # no labels: all background, documented
    assert np.all(cams_to_seed(cams, [1], bg_mode="threshold", threshold=1.01) == 0)
    power = cams_to_seed(cams, [1, 2], bg_mode="power", alpha=1.0)
    assert np.all(power[:, :2] == 1)
    with pytest.raises(SeplError, match="outside"):
        cams_to_seed(cams, [4])
    with pytest.raises(SeplError, match="background mode"):
        cams_to_seed(cams, [1], bg_mode="nope")
    norm = normalize_cams(cams)
    assert norm.max() <= 1 and np.allclose(norm.reshape(3, -1).max(1), 1, atol=1e-4)
    assert cam_heatmap(cams, [1]).max() == pytest.approx(1, abs=1e-4)


def test_compute_cams_multiscale_flip_shapes_and_flip_equivariance():
    class Mirror(torch.nn.Module):
        def forward(self, x):  # a "CAM" = the red channel, at stride 2
            return x[:, :1, ::2, ::2] * 10

    img = np.zeros((20, 30, 3), np.uint8)
    img[:, :10, 0] = 255
    cams = compute_cams(Mirror(), img, scales=(1.0, 0.5), flip=True)
    assert cams.shape == (1, 20, 30) and cams.dtype == np.float32
    assert cams[0, :, :8].mean() > 10 * cams[0, :, 14:].mean()
    with pytest.raises(SeplError, match="RGB"):
        compute_cams(Mirror(), img[..., 0])
