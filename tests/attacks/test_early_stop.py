"""Early stopping and per-sample random streams in PGD and MIA.

The conv metric runs in float64 here: a batched float32 kernel's rows can differ in
the last bits (~1e-8) with the batch size, which an ℓ∞ sign step may amplify; float64
keeps these comparisons about the algorithm, not about the kernels.
"""

import pytest
import torch

import attacks
import metrics
from attack_helpers import ConvEmbedding, make_triplets, scores
from suite.scoring import worst_score
from suite.types import Triplets

STEPS = 5


def _batch(n: int = 24, dtype=torch.float64, **kw) -> Triplets:
    b = make_triplets(n, size=8, spread=0.1, seed=5, **kw)
    return b.with_images(b.ref.to(dtype), b.x0.to(dtype), b.x1.to(dtype))


def _metric(name: str):
    if name == "conv":
        return ConvEmbedding().eval().double(), _batch()
    return metrics.load("l2"), _batch(dtype=torch.float32)


@pytest.mark.parametrize("metric_name", ["conv", "l2"])
@pytest.mark.parametrize("threat", ["ref", "all"])
@pytest.mark.parametrize("norm,eps", [("l2", 0.03), ("linf", 0.003)])
@pytest.mark.parametrize("name", ["pgd", "mia"])
def test_early_stopping_keeps_every_per_sample_score_for_fewer_gradients(name, norm, eps, threat, metric_name):
    metric, batch = _metric(metric_name)
    runs = {}
    for early_stop in (False, True):
        attack = attacks.load(name, norm=norm, eps=eps, threat=threat, steps=STEPS, seed=3, early_stop=early_stop)
        runs[early_stop] = (scores(metric, attack.perturb(metric, batch)), attack.last_gradient_evaluations)
    (off, spent_off), (on, spent_on) = runs[False], runs[True]
    worst = worst_score(batch.judge)
    can_lose = scores(metric, batch) > worst
    # the budget flips some samples and leaves others standing, so both paths are exercised
    assert (can_lose & (on == worst)).any() and (can_lose & (on > worst)).any()
    assert torch.equal(off, on)
    assert spent_off == len(batch) * STEPS
    assert spent_on < spent_off


def test_only_samples_that_can_still_lose_are_stepped(conv_metric):
    judge = torch.tensor([0.5, 0.9, 0.1, 0.7, 0.3, 0.5, 1.0, 0.0, 0.6])
    batch = make_triplets(9, judge=judge)
    attack = attacks.load("pgd", eps=0.05, steps=6)
    adv = attack.perturb(conv_metric, batch)
    steps = conv_metric.calls[3:]  # after the two candidates and the clean reference
    worst = worst_score(judge)
    can_lose = int((scores(conv_metric, batch) > worst).sum())
    standing = int((scores(conv_metric, adv) > worst).sum())
    assert 0 < standing < can_lose < 9 and steps[0] == can_lose
    assert all(a >= b for a, b in zip(steps, steps[1:]))
    assert attack.last_gradient_evaluations == sum(steps[:6]) < 6 * can_lose
    assert steps[6:] == [standing]  # the final iterate, of the samples still standing only


def test_a_settled_sample_keeps_its_first_flip_and_the_others_run_unchanged(l2):
    batch = _batch(16, dtype=torch.float32)
    off = attacks.load("mia", norm="l2", eps=0.03, early_stop=False).perturb(l2, batch)
    on = attacks.load("mia", norm="l2", eps=0.03, early_stop=True).perturb(l2, batch)
    worst = worst_score(batch.judge)
    settled = scores(l2, on) == worst
    flipped = settled & (scores(l2, batch) > worst)
    assert flipped.any() and (~settled).any()
    # a sample still standing ran the same steps
    assert torch.equal(on.ref[~settled], off.ref[~settled])
    # one settled at the clean point stays there; a flipped one stopped at its first flip, while
    # without early stopping it walked on to larger margins further out
    assert torch.equal(on.ref[settled & ~flipped], batch.ref[settled & ~flipped])
    used_on = (on.ref - batch.ref).flatten(1).norm(dim=1)
    used_off = (off.ref - batch.ref).flatten(1).norm(dim=1)
    assert (used_on[flipped] <= used_off[flipped] + 1e-6).all()


@pytest.mark.parametrize("threat", ["ref", "all"])
@pytest.mark.parametrize("early_stop", [False, True])
@pytest.mark.parametrize("name,options", [("pgd", {"restarts": 2}), ("mia", {})])
def test_a_sample_result_does_not_depend_on_its_batch(name, options, early_stop, threat):
    metric, batch = _metric("conv")
    attack = attacks.load(name, norm="linf", eps=0.003, threat=threat, steps=STEPS, early_stop=early_stop, **options)
    full = attack.perturb(metric, batch)
    pick = [17, 2, 9, 4, 20]
    part = attack.perturb(metric, batch.subset(torch.tensor(pick)))
    for image in ("ref", "x0", "x1"):
        assert torch.allclose(getattr(part, image), getattr(full, image)[pick], rtol=0, atol=1e-12)
    assert torch.equal(scores(metric, part), scores(metric, full)[pick])


def test_random_starts_follow_the_sample_id_not_the_row():
    metric, batch = _metric("conv")
    row = [0, 0]
    twins = Triplets(batch.ref[row], batch.x0[row], batch.x1[row], torch.tensor([0.9, 0.9], dtype=torch.float64),
                     ["a", "b"])
    attack = attacks.load("pgd", eps=0.5, steps=3, early_stop=False)
    pair = attack.perturb(metric, twins)
    alone = attack.perturb(metric, Triplets(twins.ref[1:], twins.x0[1:], twins.x1[1:], twins.judge[1:], ["b"]))
    assert torch.equal(pair.ref[1:], alone.ref)
    assert not torch.equal(pair.ref[0], twins.ref[0]) and not torch.equal(pair.ref[0], pair.ref[1])
