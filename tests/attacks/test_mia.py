import pytest
import torch

import attacks
from attack_helpers import budget_used, make_triplets, scores
from suite.scoring import worst_score


@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("linf", 0.03)])
@pytest.mark.parametrize("threat", ["ref", "all"])
def test_mia_respects_the_threat_model_and_never_beats_natural(conv_metric, norm, eps, threat):
    judge = torch.tensor([0.5, 0.9, 0.1, 0.7, 0.3, 0.65, 0.2])
    batch = make_triplets(7, judge=judge)
    adv = attacks.load("mia", norm=norm, eps=eps, threat=threat).perturb(conv_metric, batch)
    for name in ("ref", "x0", "x1"):
        a, c = getattr(adv, name), getattr(batch, name)
        assert a.min() >= 0 and a.max() <= 1
        if threat == "ref" and name != "ref":
            assert torch.equal(a, c)
        else:
            assert (budget_used(c, a, norm) <= eps + 1e-6).all()
        assert torch.equal(a[0], c[0])  # j = ½: nothing to gain, left clean
    attacked = scores(conv_metric, adv)
    assert (attacked <= scores(conv_metric, batch)).all()
    assert attacked[0] == 0.5


def test_mia_is_deterministic(conv_metric, triplets):
    batch = triplets(5)
    a = attacks.load("mia", norm="linf", eps=0.03, seed=1).perturb(conv_metric, batch)
    b = attacks.load("mia", norm="linf", eps=0.03, seed=1).perturb(conv_metric, batch)
    assert torch.equal(a.ref, b.ref)


def test_mia_defaults_follow_the_paper():
    attack = attacks.load("mia", eps=0.3)
    assert (attack.steps, attack.decay) == (10, 1.0)
    assert attack.step_size == pytest.approx(0.03)  # α = ε / T


@pytest.mark.parametrize("decay", [0.0, 1.0])
def test_mia_breaks_the_l2_metric_at_large_budgets(l2, decay):
    batch = make_triplets(48, spread=0.05, seed=3)
    adv = attacks.load("mia", norm="l2", eps=1.5, decay=decay).perturb(l2, batch)
    assert scores(l2, adv).mean() <= worst_score(batch.judge).mean() + 0.05
