import pytest
import torch

import attacks
import metrics
from attack_helpers import budget_used, make_triplets, scores
from suite.errors import SuiteError
from suite.scoring import twoafc_score, worst_score


def _check_contract(clean, adv, norm, eps, threat):
    for name in ("ref", "x0", "x1"):
        a, c = getattr(adv, name), getattr(clean, name)
        assert a.shape == c.shape and a.dtype == c.dtype
        assert a.min() >= 0 and a.max() <= 1
        if threat == "ref" and name != "ref":
            assert torch.equal(a, c), f"{name} moved under threat ref"
        else:
            assert (budget_used(c, a, norm) <= eps + 1e-6).all()
    assert torch.equal(adv.judge, clean.judge) and adv.sample_id == clean.sample_id


@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("linf", 0.03)])
@pytest.mark.parametrize("threat", ["ref", "all"])
def test_pgd_respects_the_threat_model_and_never_beats_natural(conv_metric, norm, eps, threat):
    judge = torch.tensor([0.5, 0.9, 0.1, 0.7, 0.3, 0.5, 1.0, 0.0, 0.6])
    batch = make_triplets(9, judge=judge)
    adv = attacks.load("pgd", norm=norm, eps=eps, threat=threat, steps=5).perturb(conv_metric, batch)
    _check_contract(batch, adv, norm, eps, threat)
    natural, attacked = scores(conv_metric, batch), scores(conv_metric, adv)
    assert (attacked <= natural).all()
    half = judge == 0.5
    assert (attacked[half] == 0.5).all()
    for name in ("ref", "x0", "x1"):
        assert torch.equal(getattr(adv, name)[half], getattr(batch, name)[half])


def test_pgd_works_without_embed(triplets):
    ssim = metrics.load("ssim")
    batch = triplets(5)
    adv = attacks.load("pgd", norm="linf", eps=0.05, steps=5).perturb(ssim, batch)
    _check_contract(batch, adv, "linf", 0.05, "ref")
    assert (scores(ssim, adv) <= scores(ssim, batch)).all()


def test_pgd_is_deterministic_under_seed(conv_metric, triplets):
    batch = triplets(6)
    runs = [attacks.load("pgd", eps=0.5, steps=4, seed=s).perturb(conv_metric, batch).ref for s in (3, 3, 4)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_pgd_embeds_the_candidates_once_per_batch_under_ref(conv_metric, triplets):
    batch = triplets(4)
    attack = attacks.load("pgd", eps=0.5, steps=6, restarts=2, early_stop=False)
    attack.perturb(conv_metric, batch)
    # clean candidates once, clean reference, then one reference pass per step and per restart end
    assert conv_metric.calls == [4] * (2 + 1 + 2 * (6 + 1))
    assert attack.last_gradient_evaluations == 4 * 2 * 6


def test_pgd_lowers_the_l2_score_as_eps_grows(l2):
    batch = make_triplets(64, spread=0.05, seed=1)
    means = [scores(l2, attacks.load("pgd", eps=eps, steps=10).perturb(l2, batch)).mean().item()
             for eps in (0.0, 0.1, 0.3, 0.6, 1.2)]
    assert all(b <= a + 1e-12 for a, b in zip(means, means[1:])), means
    worst = worst_score(batch.judge).mean().item()
    assert means[1] < means[0] and means[-1] <= worst + 0.05, (means, worst)


def test_pgd_l2_matches_the_exact_certificate_of_the_l2_metric(l2):
    """Ground truth under threat ref: the decision flips iff ref crosses the bisector, at radius R."""
    batch = make_triplets(600, size=8, spread=0.1, seed=2, judge=torch.full((600,), 0.8))
    eps = 0.05
    with torch.no_grad():
        d0, d1 = l2.distance(batch.ref, batch.x0), l2.distance(batch.ref, batch.x1)
    radius = l2.certified_radius(batch.ref, batch.x0, batch.x1)
    adv = attacks.load("pgd", norm="l2", eps=eps).perturb(l2, batch)
    with torch.no_grad():
        a0, a1 = l2.distance(adv.ref, adv.x0), l2.distance(adv.ref, adv.x1)
    flipped = torch.sign(a1 - a0) != torch.sign(d1 - d0)
    majority = d1 < d0  # the metric agrees with the 80%: the adversary has something to take
    weak = majority & (radius < 0.95 * eps)
    strong = radius > eps
    assert weak.sum() >= 100 and strong.sum() >= 100, (weak.sum(), strong.sum())
    assert flipped[weak].double().mean() >= 0.99
    assert not flipped[strong].any()
    assert (twoafc_score(a0, a1, batch.judge) <= twoafc_score(d0, d1, batch.judge)).all()


def test_pgd_options_are_validated():
    with pytest.raises(SuiteError, match="restarts > 1 needs random_start"):
        attacks.load("pgd", restarts=2, random_start=False)
    with pytest.raises(SuiteError, match="steps must be an integer"):
        attacks.load("pgd", steps=0)
    assert attacks.load("pgd", eps=0.4, steps=8).step_size == pytest.approx(2.5 * 0.4 / 8)
    assert attacks.load("pgd", eps=0.4, rel_stepsize=0.1).step_size == pytest.approx(0.04)


def test_zero_budget_returns_the_clean_batch(l2, triplets):
    batch = triplets(3)
    adv = attacks.load("pgd", eps=0.0).perturb(l2, batch)
    assert torch.equal(adv.ref, batch.ref)
