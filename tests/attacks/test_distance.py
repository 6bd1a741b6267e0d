import math

import pytest
import torch

import attacks
import metrics
from attack_helpers import budget_used, make_triplets
from suite.errors import SuiteError


@pytest.mark.parametrize("norm,eps", [("l2", 0.3), ("linf", 0.01)])
def test_distance_attack_stays_in_the_ball_and_box(conv_metric, norm, eps):
    x = make_triplets(5, lo=0.0, hi=1.0).ref
    x_adv = attacks.load_distance("distance", norm=norm, eps=eps, steps=5).maximise(conv_metric, x)
    assert (budget_used(x, x_adv, norm) <= eps + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_distance_attack_reaches_the_l2_metric_bound():
    """For l2, d(x, x + δ) = ‖δ‖₂: the maximum is ε in ℓ2 and ε·√n in ℓ∞ when the box does not bind."""
    l2 = metrics.load("l2")
    x = make_triplets(6, size=8).ref
    reached = attacks.load_distance("distance", norm="l2", eps=0.2).reached(l2, x)
    assert (reached >= 0.99 * 0.2).all()
    assert (reached <= l2.distance_bound(x, 0.2) + 1e-5).all()
    reached = attacks.load_distance("distance", norm="linf", eps=0.01).reached(l2, x)
    assert (reached >= 0.99 * 0.01 * math.sqrt(x[0].numel())).all()


def test_distance_attack_grows_with_eps_and_is_seeded(conv_metric):
    x = make_triplets(4).ref
    small = attacks.load_distance("distance", eps=0.1, steps=8).reached(conv_metric, x)
    large = attacks.load_distance("distance", eps=1.0, steps=8).reached(conv_metric, x)
    assert (large > small).all() and (small > 0).all()
    again = attacks.load_distance("distance", eps=0.1, steps=8).reached(conv_metric, x)
    assert torch.equal(small, again)


def test_distance_attack_is_its_own_kind_of_plugin(conv_metric, triplets):
    with pytest.raises(SuiteError, match="'distance' is a distance attack .*not a 2AFC attack"):
        attacks.load("distance")
    with pytest.raises(SuiteError, match="'pgd' is a 2AFC attack .*not a distance attack"):
        attacks.load_distance("pgd")
    assert not hasattr(attacks.load_distance("distance"), "perturb")
    with pytest.raises(SuiteError, match="bad options.*threat"):
        attacks.load_distance("distance", threat="all")


def test_distance_attack_without_embed():
    ssim = metrics.load("ssim")
    x = make_triplets(3).ref
    reached = attacks.load_distance("distance", norm="linf", eps=0.03, steps=5).reached(ssim, x)
    assert (reached > 0).all()
