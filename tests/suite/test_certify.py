"""Certificates under attack: the formulas of suite.certify, alone and through the lipsim metric.

Every certificate here is attacked by a self-contained ℓ2 PGD (random restarts, cosine
step decay, the best point visited kept) written in this file, independent of attacks/.
A certified triplet attacked inside its radius must keep its decision; a distance
attack must stay under the certified bound. Non-vacuity checks show the same attack
does break the decision a little outside the radius.
"""

from __future__ import annotations

import math

import pytest
import torch

from metrics.lipsim.metric import LipSimMetric
from metrics.lipsim.model import LipSimNet
from metrics.lipsim.presets import LipSimConfig
from metrics.lipsim.resize import interpolation_matrix, resize, resize_operator_norm
from suite import certify

NET = LipSimConfig(
    name="test", input_size=16, channels=6, conv_depth=3, conv_inner=6, n_pools=1,
    dense_depth=2, dense_inner=32, embed_dim=48, conv_q_scaling=True,
)
# no SLL layer at all: f = (4×4 sum-pool / 4) of the image, a linear map with J Jᵀ = I
LINEAR = NET.replace(channels=3, conv_depth=0, dense_depth=0)


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------- the attack


def _project(d: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    n = d.flatten(1).norm(dim=1).clamp_min(1e-30)
    return d * (eps / n).clamp(max=1).view(-1, *[1] * (d.ndim - 1))


def pgd_l2(objective, images, perturb, eps, gen, steps=50, restarts=4):
    """Maximise ``objective(*images)`` (per sample) with each perturbed image in its own ℓ2 ball ``eps`` (B,).

    Returns the best value visited per sample, the clean point included.
    """
    best = objective(*images).detach()
    for restart in range(restarts):
        deltas = []
        for img, p in zip(images, perturb):
            d = torch.zeros_like(img)
            if p and restart > 0:
                d = torch.randn(img.shape, generator=gen, dtype=img.dtype)
                scale = eps * torch.rand(img.shape[0], generator=gen, dtype=img.dtype)
                d = d / d.flatten(1).norm(dim=1).view(-1, *[1] * (d.ndim - 1)) * scale.view(-1, *[1] * (d.ndim - 1))
            deltas.append(d)
        for t in range(steps + 1):
            for d, p in zip(deltas, perturb):
                d.requires_grad_(p)
            value = objective(*[i + d for i, d in zip(images, deltas)])
            best = torch.maximum(best, value.detach())
            if t == steps:
                break
            grads = iter(torch.autograd.grad(value.sum(), [d for d, p in zip(deltas, perturb) if p]))
            lr = eps * (0.3 * 0.5 * (1 + math.cos(math.pi * t / steps)) + 0.02)
            new = []
            for d, p in zip(deltas, perturb):
                if p:
                    g = next(grads)
                    g = g / g.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *[1] * (g.ndim - 1))
                    d = _project(d.detach() + lr.view(-1, *[1] * (g.ndim - 1)) * g, eps)
                new.append(d.detach())
            deltas = new
    return best


def flip_objective(embed, compare, ref, x0, x1):
    """``−s·(d1 − d0)`` with ``s`` the clean decision: ≥ 0 exactly when the decision flipped or tied."""
    with torch.no_grad():
        er, e0, e1 = embed(ref), embed(x0), embed(x1)
        s = torch.sign(compare(er, e1) - compare(er, e0))
    assert (s != 0).all()

    def objective(r, a, b):
        er = embed(r)
        return -s * (compare(er, embed(b)) - compare(er, embed(a)))

    return objective


def cosine_distance(a, b):
    return 1 - torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-30)


def _triplets(gen, n, size, spread=0.3, scale=1.0):
    ref = torch.rand(n, 3, size, size, generator=gen)
    x0 = ref + spread * (torch.rand(ref.shape, generator=gen) - ref)
    x1 = ref + spread * (torch.rand(ref.shape, generator=gen) - ref)
    return ref * scale, x0 * scale, x1 * scale


def _flips(metric, ref, x0, x1, threat, eps, gen, **kw):
    objective = flip_objective(metric.embed, metric.compare, ref, x0, x1)
    best = pgd_l2(objective, [ref, x0, x1], [True, threat == "all", threat == "all"], eps, gen, **kw)
    return best >= 0


# ------------------------------------------------------------- formulas in embedding space


def test_ref_radius_is_exact_for_an_isometry():
    gen = torch.Generator().manual_seed(0)
    r, a, b = (torch.randn(64, 10, generator=gen, dtype=torch.float64) for _ in range(3))
    radius = certify.ref_radius(r, a, b)
    u = certify.unit(b) - certify.unit(a)
    side = torch.sign((r * u).sum(1, keepdim=True))
    toward_plane = -side * certify.unit(u)
    inside = r + radius[:, None] * (1 - 1e-9) * toward_plane
    outside = r + radius[:, None] * (1 + 1e-6) * toward_plane
    clean = certify.decision(r, a, b)
    assert (certify.decision(inside, a, b) == clean).all()
    assert (certify.decision(outside, a, b) == -clean).all()


def test_lipsim_repo_radius_is_ours_divided_by_the_norm():
    gen = torch.Generator().manual_seed(1)
    r, a, b = (torch.randn(32, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(certify.lipsim_repo_radius(r, a, b), certify.ref_radius(r, a, b) / r.norm(dim=1))


def test_turn_bound_holds_and_is_attained_by_the_tangent():
    gen = torch.Generator().manual_seed(2)
    v = torch.randn(200, 6, generator=gen, dtype=torch.float64)
    rho = v.norm(dim=1) * torch.rand(200, generator=gen, dtype=torch.float64)
    w = torch.randn(200, 6, generator=gen, dtype=torch.float64)
    moved = v + certify.unit(w) * rho[:, None]
    bound = certify.turn_bound(v.norm(dim=1), rho)
    assert (certify.angle(v, moved) <= bound + 1e-12).all()
    # tangent point: v + w⊥ with |w⊥| chosen so that |moved − v| = ρ and the angle is arcsin(ρ/|v|)
    perp = certify.unit(w - (w * certify.unit(v)).sum(1, keepdim=True) * certify.unit(v))
    n = v.norm(dim=1, keepdim=True)
    c = (rho[:, None] / n) ** 2
    tangent = v * (1 - c) + perp * rho[:, None] * torch.sqrt(1 - c)
    torch.testing.assert_close((tangent - v).norm(dim=1), rho)
    torch.testing.assert_close(certify.angle(v, tangent), bound)
    assert (certify.turn_bound(v.norm(dim=1), v.norm(dim=1)) == math.pi).all()


def test_distance_bound_is_attained_for_an_isometry():
    gen = torch.Generator().manual_seed(3)
    v = torch.randn(50, 6, generator=gen, dtype=torch.float64)
    eps = 0.7 * v.norm(dim=1).min().item()
    bound = certify.distance_bound(v, eps)
    w = torch.randn(50, 6, generator=gen, dtype=torch.float64)
    perp = certify.unit(w - (w * certify.unit(v)).sum(1, keepdim=True) * certify.unit(v))
    c = (eps / v.norm(dim=1, keepdim=True)) ** 2
    tangent = v * (1 - c) + perp * eps * torch.sqrt(1 - c)
    torch.testing.assert_close(cosine_distance(v, tangent), bound)
    assert (certify.distance_bound(v, 2 * v.norm(dim=1).max().item()) == 2).all()


def test_all_radius_survives_an_attack_on_all_three_embeddings():
    gen = torch.Generator().manual_seed(4)
    r, a, b = (torch.randn(64, 5, generator=gen, dtype=torch.float64) for _ in range(3))
    radius = certify.all_radius(r, a, b)
    assert (radius > 0).all()
    objective = flip_objective(lambda e: e, cosine_distance, r, a, b)
    assert not (pgd_l2(objective, [r, a, b], [True] * 3, radius * 0.999, gen, steps=60) >= 0).any()
    # the bisection stops at the boundary of condition (C): a little more is not certified
    norms = (r.norm(dim=1), a.norm(dim=1), b.norm(dim=1))
    gap = (certify.angle(r, b) - certify.angle(r, a)).abs()
    assert certify._all_condition(norms, gap, radius).all()
    assert not certify._all_condition(norms, gap, radius * (1 + 1e-9) + 1e-15).any()


def test_ties_and_zero_embeddings_certify_nothing():
    r = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    a = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, -1.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)  # equidistant, identical, zero ref
    assert (certify.ref_radius(r, a, b) == 0).all()
    assert (certify.all_radius(r, a, b) == 0).all()
    assert certify.distance_bound(r, 0.1)[2] == 2


def test_eta_and_lipschitz_shrink_the_radius_as_stated():
    gen = torch.Generator().manual_seed(5)
    r, a, b = (torch.randn(16, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    exact = certify.ref_radius(r, a, b)
    torch.testing.assert_close(certify.ref_radius(r, a, b, lipschitz=2.0, eta=1e-3), ((exact - 2e-3) / 2).clamp_min(0))
    assert (certify.all_radius(r, a, b, lipschitz=2.0) <= certify.all_radius(r, a, b) / 2 + 1e-12).all()


# -------------------------------------------------------------------- resize operator norm


def _power_iteration_resize_norm(in_hw, out_hw, iters=300):
    x = torch.randn(1, 1, *in_hw, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigma = 0.0
    for _ in range(iters):
        x = (x / x.norm()).requires_grad_(True)
        y = resize(x, out_hw)
        sigma = y.norm().item()
        (x,) = torch.autograd.grad(y, x, y)  # Rᵀ R x
    return sigma


@pytest.mark.parametrize("in_hw,out_hw", [((8, 8), (16, 16)), ((24, 24), (16, 16)), ((20, 13), (16, 16)), ((7, 9), (16, 16))])
def test_resize_norm_matches_power_iteration_on_the_full_operator(in_hw, out_hw):
    exact = resize_operator_norm(in_hw, out_hw)
    power = _power_iteration_resize_norm(in_hw, out_hw)
    assert power <= exact
    assert power == pytest.approx(exact, rel=1e-4)
    assert resize_operator_norm(out_hw, out_hw) == 1.0
    # the 2-D resize is the separable product of the 1-D matrices
    a_h, a_w = interpolation_matrix(in_hw[0], out_hw[0]), interpolation_matrix(in_hw[1], out_hw[1])
    x = torch.rand(2, 3, *in_hw, dtype=torch.float64)
    torch.testing.assert_close(resize(x, out_hw), a_h @ x @ a_w.T)


# ----------------------------------------------------------------- through the lipsim metric


def _net(kind: str, gen: torch.Generator) -> LipSimNet:
    """Random weights, or weights briefly trained to be tight (near-isometric), small-norm or large-norm."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    net = LipSimNet(NET)
    if kind != "random":
        opt = torch.optim.Adam(net.parameters(), lr=0.03)
        x = torch.rand(32, 3, 16, 16, generator=gen)
        for _ in range(25):
            if kind == "tight":
                v = torch.randn(32, 3, 4, 4, generator=gen).repeat_interleave(4, 2).repeat_interleave(4, 3) * 0.05
                loss = -((net(x + v) - net(x)).norm(dim=1) / v.flatten(1).norm(dim=1)).mean()
            elif kind == "small-norm":
                loss = net(x).pow(2).sum(1).mean()
            else:
                loss = -net(x).norm(dim=1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.requires_grad_(False)


@pytest.mark.parametrize("kind", ["random", "tight", "small-norm", "large-norm"])
@pytest.mark.parametrize("threat", ["ref", "all"])
def test_no_certified_triplet_flips_inside_its_radius(kind, threat):
    gen = torch.Generator().manual_seed(10)
    metric = LipSimMetric.from_net(_net(kind, gen))
    ref, x0, x1 = _triplets(gen, 12, 16)
    radius = metric.certified_radius(ref, x0, x1, threat).float()
    certified = radius > 0
    assert certified.sum() >= 8
    ref, x0, x1, radius = ref[certified], x0[certified], x1[certified], radius[certified]
    assert not _flips(metric, ref, x0, x1, threat, radius * 0.98, gen).any()
    if kind == "tight":  # the same attack breaks the decision a little outside: it is strong, the radius tight-ish
        assert _flips(metric, ref, x0, x1, threat, radius * 3, gen).float().mean() > 0.5


@pytest.mark.parametrize("kind", ["random", "tight"])
def test_distance_attack_stays_under_the_certified_bound(kind):
    gen = torch.Generator().manual_seed(11)
    metric = LipSimMetric.from_net(_net(kind, gen))
    x = torch.rand(8, 3, 16, 16, generator=gen)
    norms = metric.embed(x).norm(dim=1)
    for frac in (0.05, 0.5, 1.2):
        eps = torch.full((8,), frac * norms.min().item())
        bound = metric.distance_bound(x, eps[0].item())
        with torch.no_grad():
            clean = metric.embed(x)
        reached = pgd_l2(lambda z: metric.compare(clean, metric.embed(z)).double(), [x], [True], eps, gen)
        assert (reached <= bound).all()
        if frac == 0.05 and kind == "tight":
            assert (reached > 0.2 * bound).all()  # the bound is not vacuous


def test_small_embeddings_break_the_lipsim_repo_radius_but_not_ours():
    """‖f(ref)‖ < 1: the reference code's radius over-claims; inside it an attack flips, inside ours never."""
    gen = torch.Generator().manual_seed(12)
    metric = LipSimMetric.from_net(LipSimNet(LINEAR).requires_grad_(False))
    ref, x0, x1 = _triplets(gen, 16, 16, spread=0.5, scale=0.05)  # dark images: ‖f‖ ≈ 0.4
    er, e0, e1 = metric.embed(ref), metric.embed(x0), metric.embed(x1)
    assert (er.norm(dim=1) < 1).all()
    ours = metric.certified_radius(ref, x0, x1, "ref").float()
    theirs = certify.lipsim_repo_radius(er, e0, e1).float()
    assert (theirs > ours).all()
    assert not _flips(metric, ref, x0, x1, "ref", ours * 0.98, gen).any()
    assert _flips(metric, ref, x0, x1, "ref", theirs * 0.98, gen).all()


def test_small_norm_trained_network_breaks_the_lipsim_repo_radius_but_not_ours():
    gen = torch.Generator().manual_seed(13)
    torch.manual_seed(13)
    net = LipSimNet(NET)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    ref, x0, x1 = _triplets(gen, 12, 16)
    for _ in range(120):  # shrink the reference embeddings below norm 1, keep the network expansive
        v = torch.randn(12, 3, 4, 4, generator=gen).repeat_interleave(4, 2).repeat_interleave(4, 3) * 0.05
        ratio = (net(ref + v) - net(ref)).norm(dim=1) / v.flatten(1).norm(dim=1)
        loss = net(ref).pow(2).sum(1).mean() - 0.5 * ratio.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    metric = LipSimMetric.from_net(net.requires_grad_(False))
    er, e0, e1 = metric.embed(ref), metric.embed(x0), metric.embed(x1)
    keep = (er.norm(dim=1) < 0.8) & (certify.ref_radius(er, e0, e1) > 0)
    assert keep.sum() >= 6
    ref, x0, x1 = ref[keep], x0[keep], x1[keep]
    ours = metric.certified_radius(ref, x0, x1, "ref").float()
    theirs = certify.lipsim_repo_radius(metric.embed(ref), metric.embed(x0), metric.embed(x1)).float()
    assert not _flips(metric, ref, x0, x1, "ref", ours * 0.98, gen).any()
    assert _flips(metric, ref, x0, x1, "ref", theirs * 0.98, gen).float().mean() > 0.5


@pytest.mark.parametrize("image_size", [8, 24])
def test_certificates_hold_in_the_dataset_pixel_space_through_the_resize(image_size):
    gen = torch.Generator().manual_seed(14)
    metric = LipSimMetric.from_net(_net("tight", gen))
    lip = metric.lipschitz((image_size, image_size))
    ref, x0, x1 = _triplets(gen, 10, image_size)
    for threat in ("ref", "all"):
        radius = metric.certified_radius(ref, x0, x1, threat).float()
        c = radius > 0
        assert c.sum() >= 6
        assert not _flips(metric, ref[c], x0[c], x1[c], threat, radius[c] * 0.98, gen).any()
    if lip > 1:  # upsampling: without the factor the radius would be broken
        radius = metric.certified_radius(ref, x0, x1, "ref").float()
        assert _flips(metric, ref, x0, x1, "ref", radius * lip * 0.98, gen).any()
