"""MinNorm against exact radii: the ``l2`` metric's decision under threat ``ref`` flips exactly
where the reference crosses the hyperplane bisecting the candidates."""

import pytest
import torch

import attacks
import metrics
from attack_helpers import budget_used, make_triplets, scores
from metrics.classic import bisector_radius
from suite.scoring import worst_score


def _agreeing(n: int = 64):
    """Triplets in the middle of the range with small radii, judged 80/20 where the l2 metric sides with the 80%."""
    l2 = metrics.load("l2")
    batch = make_triplets(n, size=8, spread=0.1, seed=2, judge=torch.full((n,), 0.8))
    with torch.no_grad():
        agree = l2.distance(batch.ref, batch.x1) < l2.distance(batch.ref, batch.x0)
    return l2, batch, agree


def _linf_bisector_radius(ref, x0, x1):
    """ℓ∞ distance from ``ref`` to the bisecting hyperplane ``⟨z, w⟩ = b``:
    ``|⟨ref, w⟩ − b| / ‖w‖₁`` (Hölder: the dual norm of ℓ∞ is ℓ1), with ``w = x1 − x0`` and
    ``b = (‖x1‖² − ‖x0‖²)/2``."""
    r, a, c = (t.flatten(1).double() for t in (ref, x0, x1))
    w = c - a
    return ((r * w).sum(1) - (c.pow(2).sum(1) - a.pow(2).sum(1)) / 2).abs() / w.abs().sum(1)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_minimal_radius_is_within_one_percent_of_the_exact_radius_and_never_below(norm):
    l2, batch, agree = _agreeing()
    exact = (bisector_radius(batch.ref.double(), batch.x0.double(), batch.x1.double()) if norm == "l2"
             else _linf_bisector_radius(batch.ref, batch.x0, batch.x1))
    # the box does not bind: every pixel has more room to both faces than 1.02 × the radius
    room = torch.minimum(batch.ref, 1 - batch.ref).flatten(1).amin(1).double()
    free = agree & (room > 1.02 * exact)
    assert free.sum() >= 20
    attack = attacks.load("minnorm", norm=norm)
    found = attack.radius(l2, batch)
    ratio = found[free] / exact[free]
    assert (ratio >= 1 - 1e-5).all(), ratio.min()
    assert (ratio <= 1.01).double().mean() >= 0.95, ratio
    assert attack.last_gradient_evaluations > 0


@pytest.mark.parametrize("threat", ["ref", "all"])
def test_perturb_returns_the_flip_at_the_radius_inside_the_ceiling(conv_metric, threat):
    judge = torch.rand(16, generator=torch.Generator().manual_seed(4))
    judge[0] = 0.5
    batch = make_triplets(16, size=8, seed=4, judge=judge)
    attack = attacks.load("minnorm", norm="linf", eps=0.002, threat=threat, steps=10)
    radius, adv = attack.search(conv_metric, batch)
    natural, attacked, worst = scores(conv_metric, batch), scores(conv_metric, adv), worst_score(judge)
    settled = natural == worst
    assert (radius[settled] == 0).all() and radius[0] == 0  # j = ½: nothing to gain
    finite = radius.isfinite() & ~settled
    assert finite.any() and radius.isinf().any()  # the ceiling leaves some standing
    assert (attacked[finite] == worst[finite]).all()
    assert (radius[finite] <= 0.002).all()
    used = torch.stack([budget_used(getattr(batch, k), getattr(adv, k), "linf") for k in ("ref", "x0", "x1")])
    assert torch.allclose(used.amax(0)[finite], radius[finite])
    unchanged = ~finite
    for k in ("ref", "x0", "x1"):
        assert torch.equal(getattr(adv, k)[unchanged], getattr(batch, k)[unchanged])
        if threat == "ref" and k != "ref":
            assert torch.equal(getattr(adv, k), getattr(batch, k))
    assert (attacked <= natural).all()


def test_radius_of_a_sample_does_not_depend_on_its_batch():
    l2, batch, _ = _agreeing(12)
    batch = batch.with_images(batch.ref.double(), batch.x0.double(), batch.x1.double())
    attack = attacks.load("minnorm", norm="l2", eps=1.0, steps=10)
    full = attack.radius(l2, batch)
    pick = [9, 3, 0, 5]
    assert torch.equal(attack.radius(l2, batch.subset(torch.tensor(pick))), full[pick])


def test_ceiling_defaults_follow_the_norm():
    assert attacks.load("minnorm").eps == 10.0
    assert attacks.load("minnorm", norm="linf").eps == 0.5
    assert attacks.load("min-norm", norm="linf", eps=0.1).eps == 0.1
