import pytest
import torch

import hashlib

from attacks.threat import (lp_norm, normalize_l1, project, random_start, sample_generators, sample_seed,
                           steepest_direction)
from suite.errors import SuiteError


def _dykstra(z, c, eps, iters=3000):
    """Projection onto ball ∩ box by Dykstra's alternating projections (an independent algorithm)."""
    x, p, q = z.clone(), torch.zeros_like(z), torch.zeros_like(z)
    for _ in range(iters):
        y = x + p
        d = y - c
        n = d.flatten(1).norm(dim=1).view(-1, *[1] * (z.ndim - 1))
        ball = c + d * torch.clamp(eps / n.clamp_min(1e-300), max=1.0)
        p = y - ball
        w = ball + q
        x = w.clamp(0, 1)
        q = w - x
    return x


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("eps", [0.0, 0.05, 0.7, 3.0])
def test_projection_is_feasible_and_idempotent(norm, eps):
    g = torch.Generator().manual_seed(1)
    c = torch.rand(6, 3, 5, 5, generator=g)
    z = c + 2 * torch.randn(c.shape, generator=g)
    p = project(z, c, eps, norm)
    assert (lp_norm(p - c, norm) <= eps + 1e-6).all()
    assert p.min() >= 0 and p.max() <= 1
    assert torch.allclose(project(p, c, eps, norm), p, atol=1e-6)


def test_linf_projection_is_the_coordinate_clip():
    g = torch.Generator().manual_seed(2)
    c = torch.rand(4, 3, 4, 4, generator=g)
    z = c + torch.randn(c.shape, generator=g)
    expected = torch.max(torch.min(z, c + 0.1), c - 0.1).clamp(0, 1)
    assert torch.equal(project(z, c, 0.1, "linf"), expected)


@pytest.mark.parametrize("eps", [0.1, 0.5, 1.5])
def test_l2_projection_matches_dykstra_and_is_the_nearest_point(eps):
    g = torch.Generator().manual_seed(3)
    c = torch.rand(5, 3, 3, 3, generator=g, dtype=torch.float64)
    c[:, :, 0] = 0.98  # near the box face so the box binds
    z = c + torch.randn(c.shape, generator=g, dtype=torch.float64)
    p = project(z, c, eps, "l2")
    assert torch.allclose(p, _dykstra(z, c, eps), atol=1e-6)
    # variational inequality of a projection onto a convex set: ⟨z − p, w − p⟩ ≤ 0 for feasible w
    for seed in range(20):
        w = random_start(c, eps, "l2", torch.Generator().manual_seed(seed))
        inner = ((z - p) * (w - p)).flatten(1).sum(1)
        assert (inner <= 1e-9).all()


def test_l2_projection_keeps_feasible_points():
    g = torch.Generator().manual_seed(4)
    c = torch.rand(4, 3, 4, 4, generator=g)
    z = random_start(c, 0.5, "l2", g)
    assert torch.equal(project(z, c, 0.5, "l2"), z)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_random_start_is_in_ball_and_box_and_seeded(norm):
    c = torch.rand(16, 3, 6, 6)
    a = random_start(c, 0.3, norm, torch.Generator().manual_seed(0))
    b = random_start(c, 0.3, norm, torch.Generator().manual_seed(0))
    other = random_start(c, 0.3, norm, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, other)
    assert (lp_norm(a - c, norm) <= 0.3 + 1e-6).all()
    assert a.min() >= 0 and a.max() <= 1
    assert (lp_norm(a - c, norm) > 0).all()


def test_l2_random_start_radius_is_uniform_in_the_ball():
    c = torch.full((4000, 1, 1, 2), 0.5, dtype=torch.float64)  # 2-D ball: P(r ≤ ε/2) = 1/4
    r = lp_norm(random_start(c, 0.2, "l2", torch.Generator().manual_seed(0)) - c, "l2")
    assert abs((r <= 0.1).double().mean().item() - 0.25) < 0.03


def test_steepest_direction_maximises_the_linear_gain():
    g = torch.Generator().manual_seed(5)
    grad = torch.randn(3, 2, 4, 4, generator=g)
    for norm in ("l2", "linf"):
        v = steepest_direction(grad, norm)
        assert torch.allclose(lp_norm(v, norm), torch.ones(3))
        best = (grad * v).flatten(1).sum(1)
        for _ in range(50):
            u = torch.randn(grad.shape, generator=g)
            u = u / lp_norm(u, norm).view(-1, 1, 1, 1)
            assert ((grad * u).flatten(1).sum(1) <= best + 1e-5).all()
    zero = torch.zeros(2, 3, 4, 4)
    assert torch.equal(steepest_direction(zero, "l2"), zero)
    assert torch.equal(steepest_direction(zero, "linf"), zero)


def test_norm_helpers():
    d = torch.randn(3, 3, 4, 4)
    assert torch.allclose(lp_norm(d, "l2"), torch.linalg.vector_norm(d.flatten(1), dim=1))
    assert torch.allclose(lp_norm(d, "linf"), d.flatten(1).abs().max(1).values)
    assert torch.allclose(normalize_l1(d).flatten(1).abs().sum(1), torch.ones(3))
    with pytest.raises(SuiteError, match="norm must be one of"):
        lp_norm(d, "l1")


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_projection_with_per_sample_budgets_matches_one_budget_per_row(norm):
    g = torch.Generator().manual_seed(6)
    c = torch.rand(4, 3, 5, 5, generator=g, dtype=torch.float64)
    z = c + torch.randn(c.shape, generator=g, dtype=torch.float64)
    eps = torch.tensor([0.0, 0.05, 0.7, 3.0], dtype=torch.float64)
    p = project(z, c, eps, norm)
    for i in range(4):
        assert torch.allclose(p[i:i + 1], project(z[i:i + 1], c[i:i + 1], float(eps[i]), norm), atol=1e-12)


def test_sample_seed_is_the_documented_hash_of_seed_and_id():
    expected = int.from_bytes(hashlib.sha256(b"7:nights/000012").digest()[:8], "little")
    assert sample_seed(7, "nights/000012") == expected
    seeds = {sample_seed(s, i) for s in (0, 1, 12) for i in ("1", "2", "21", "s0")}
    assert len(seeds) == 12 and all(0 <= x < 2**64 for x in seeds)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_per_sample_random_starts_ignore_the_rest_of_the_batch(norm):
    c = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(7))
    ids = [f"s{i}" for i in range(5)]
    full = random_start(c, 0.3, norm, sample_generators(1, ids))
    alone = random_start(c[3:4], 0.3, norm, sample_generators(1, ids[3:4]))
    reversed_ = random_start(c.flip(0), 0.3, norm, sample_generators(1, ids[::-1]))
    assert torch.equal(full[3:4], alone) and torch.equal(full.flip(0), reversed_)
    other_seed = random_start(c, 0.3, norm, sample_generators(2, ids))
    assert not torch.isclose(full, other_seed).flatten(1).all(1).any()
    eps = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    varied = random_start(c, eps, norm, sample_generators(1, ids))
    assert (lp_norm(varied - c, norm) <= eps + 1e-6).all() and varied.min() >= 0 and varied.max() <= 1
    with pytest.raises(SuiteError, match="one generator per sample"):
        random_start(c, 0.3, norm, sample_generators(1, ids[:2]))
