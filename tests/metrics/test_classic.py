import pytest
import torch
from skimage.metrics import structural_similarity

import metrics
from metrics.classic import bisector_radius


def images(seed=0, n=4, size=24):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g, dtype=torch.float64)
    y = (x + 0.15 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, y


def test_ssim_matches_scikit_image():
    x, y = images()
    ours = 1 - metrics.load("ssim").distance(x, y)
    theirs = [structural_similarity(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), channel_axis=2,
                                    data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
              for a, b in zip(x, y)]
    assert ours.tolist() == pytest.approx(theirs, abs=1e-6)


@pytest.mark.parametrize("name", ["l2", "psnr", "ssim"])
def test_classic_metrics_are_differentiable_distances(name):
    x, y = images()
    metric = metrics.load(name)
    y.requires_grad_(True)
    d = metric.distance(x, y)
    d.sum().backward()
    assert d.shape == (4,) and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    assert (metric.distance(x, x) < d).all()  # identical images are the closest


def test_psnr_is_negative_psnr():
    x, y = images()
    mse = (x - y).pow(2).flatten(1).mean(1)
    assert metrics.load("psnr").distance(x, y).tolist() == pytest.approx((10 * torch.log10(mse)).tolist(), abs=1e-6)


def test_bisector_radius_is_the_distance_to_the_flip():
    ref, x0, x1 = (torch.rand(3, 1, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    r = bisector_radius(ref, x0, x1)
    # moving ref along (x1 - x0) by the radius lands exactly on the bisecting hyperplane
    u = (x1 - x0) / (x1 - x0).norm()
    sign = torch.sign((ref - x1).norm() - (ref - x0).norm())  # towards the farther candidate
    on_plane = ref + sign * r * u
    assert (on_plane - x0).norm().item() == pytest.approx((on_plane - x1).norm().item(), abs=1e-9)


@pytest.mark.parametrize("name", ["l2", "psnr"])
def test_distance_bounds_hold_for_any_perturbation_in_the_ball(name):
    x, _ = images()
    metric = metrics.load(name)
    delta = torch.randn_like(x)
    delta = 0.7 * delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert (metric.distance(x, x + delta) <= metric.distance_bound(x, 0.7) + 1e-9).all()


def test_wrong_image_shape_is_a_clear_error():
    from suite.errors import SuiteError

    with pytest.raises(SuiteError, match=r"expects images \(B, 3, H, W\); got shape \(4, 24, 24\)"):
        metrics.load("l2").distance(torch.rand(4, 24, 24), torch.rand(4, 24, 24))
