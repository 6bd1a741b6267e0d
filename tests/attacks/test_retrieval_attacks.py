"""The copy-detection attacks (attacks.retrieval) and the certified rank-1 match under attack.

Small random-weights LipSim networks (16×16 inputs, as in tests/suite/test_certify.py) keep
the attacked certificate fast; ``LINEAR`` has no SLL layer (a pooling map with ``J Jᵀ = I``),
where the certificate is nearly tight, so the non-vacuity checks bite just above it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attacks
import metrics
from attacks.threat import lp_norm
from metrics.base import EmbeddingMetric
from metrics.lipsim.metric import LipSimMetric
from metrics.lipsim.model import LipSimNet
from metrics.lipsim.presets import LipSimConfig
from suite import certify, retrieval
from suite.errors import SuiteError
from suite.types import Gallery, Queries, RetrievalAttackContract
from attack_helpers import make_triplets

pytestmark = pytest.mark.usefixtures("one_thread")

NET = LipSimConfig(
    name="test", input_size=16, channels=6, conv_depth=3, conv_inner=6, n_pools=1,
    dense_depth=2, dense_inner=32, embed_dim=48, conv_q_scaling=True,
)
LINEAR = NET.replace(channels=3, conv_depth=0, dense_depth=0)


def _task(metric, n_gallery=8, n_query=4, size=16, noise=0.05, seed=1, dtype=torch.float32):
    """Gallery images uniform in [0.2, 0.8]; query i = gallery i + Gaussian noise, its one true original."""
    g = torch.Generator().manual_seed(seed)
    images = (0.2 + 0.6 * torch.rand(n_gallery, 3, size, size, generator=g)).to(dtype)
    q = (images[:n_query] + noise * torch.randn(n_query, 3, size, size, generator=g).to(dtype)).clamp(0, 1)
    with torch.no_grad():
        gallery = Gallery([f"g{k}" for k in range(n_gallery)], metric.represent(images))
    return Queries(q, [(i,) for i in range(n_query)], [f"q{i}" for i in range(n_query)]), gallery


def _correct(metric, images, queries, gallery):
    with torch.no_grad():
        return retrieval.top1(retrieval.query_distances(metric, images, gallery), queries.matches)[2]


def _lipsim(config):
    torch.manual_seed(0)
    net = LipSimNet(config)
    net.requires_grad_(False)
    return LipSimMetric.from_net(net).eval()


# ---------------------------------------------------------------------------- the certificate under attack


@pytest.mark.parametrize("config,beyond", [(NET, 1.6), (LINEAR, 1.1)], ids=["sll", "linear"])
def test_certified_match_resists_evasion_and_the_attack_bites_above_it(config, beyond):
    metric = _lipsim(config)
    queries, gallery = _task(metric)
    radius = metric.certified_match_radius(queries.images, gallery, queries.matches)
    # the method is certify.match_radius with the metric's L and η
    e = metric.embed(queries.images)
    expected = certify.match_radius(e, gallery.reps, queries.matches, lipschitz=metric.lipschitz((16, 16)),
                                    eta=metric._eta(e))
    torch.testing.assert_close(radius, expected)
    assert bool((radius > 0).all()), radius  # every query is certified (and so attacked below its radius)
    # one ε strictly below every certified radius, many steps, restarts: no query loses its match
    eps = 0.98 * float(radius.min())
    attack = attacks.load("evasion", norm="l2", eps=eps, steps=40, restarts=2, early_stop=False)
    adv = attack.perturb(metric, queries, gallery)
    assert bool((lp_norm(adv - queries.images, "l2") <= eps * (1 + 1e-5)).all())
    assert bool(_correct(metric, adv, queries, gallery).all()), f"a match was lost inside radii {radius}"
    # non-vacuity: the same attack breaks queries a little beyond every radius
    attack = attacks.load("evasion", norm="l2", eps=beyond * float(radius.max()), steps=20)
    broken = ~_correct(metric, attack.perturb(metric, queries, gallery), queries, gallery)
    assert int(broken.sum()) >= 2, broken


# ---------------------------------------------------------------------------- evasion and collision on l2


@pytest.mark.parametrize("norm,eps", [("l2", 4.0), ("linf", 0.25)])
def test_evasion_lowers_recall_within_budget_and_box(norm, eps):
    metric = metrics.load("l2")
    queries, gallery = _task(metric, n_gallery=6, n_query=6, size=8, noise=0.05)
    assert bool(_correct(metric, queries.images, queries, gallery).all())
    attack = attacks.load("evasion", norm=norm, eps=eps, steps=20)
    adv = attack.perturb(metric, queries, gallery)
    assert adv.shape == queries.images.shape
    assert bool((lp_norm(adv - queries.images, norm) <= eps * (1 + 1e-5)).all())
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    correct = _correct(metric, adv, queries, gallery)
    assert retrieval.recall_at_1(correct) <= 0.5
    # early stopping: a successful query is stepped no more, so fewer than all gradient steps are spent
    assert attack.last_gradient_evaluations < 20 * len(queries)
    # nothing moves at ε = 0
    assert torch.equal(attacks.load("evasion", eps=0.0).perturb(metric, queries, gallery), queries.images)


def test_collision_makes_the_target_the_nearest_item():
    metric = metrics.load("l2")
    queries, gallery = _task(metric, n_gallery=6, n_query=6, size=8, noise=0.05)
    targets = retrieval.collision_targets(queries.matches, len(gallery), queries.sample_id, seed=0)
    D = retrieval.query_distances(metric, queries.images, gallery)
    assert not bool(retrieval.target_top1(D, targets)[2].any())
    attack = attacks.load("collision", norm="l2", eps=5.0, steps=30)
    adv = attack.perturb(metric, queries, gallery, targets)
    assert bool((lp_norm(adv - queries.images, "l2") <= 5.0 * (1 + 1e-5)).all())
    hit = retrieval.target_top1(retrieval.query_distances(metric, adv, gallery), targets)[2]
    assert int(hit.sum()) >= 3
    # a small budget cannot do it, and the clean query is kept where nothing better was found
    small = attacks.load("collision", norm="l2", eps=0.05, steps=5).perturb(metric, queries, gallery, targets)
    assert not bool(retrieval.target_top1(retrieval.query_distances(metric, small, gallery), targets)[2].any())


@pytest.mark.parametrize("name", ["evasion", "collision"])
def test_the_best_point_is_kept(name):
    metric = metrics.load("l2")
    queries, gallery = _task(metric, n_gallery=6, n_query=6, size=8, noise=0.05)
    targets = retrieval.collision_targets(queries.matches, len(gallery), queries.sample_id, seed=0)
    attack = attacks.load(name, norm="l2", eps=1.0, steps=10)
    adv = attack.perturb(metric, queries, gallery, targets)

    def margin(images):
        D = retrieval.query_distances(metric, images, gallery)
        if name == "evasion":
            d_true, d_other, _ = retrieval.top1(D, queries.matches)
            return d_true - d_other
        d_t, d_rest, _ = retrieval.target_top1(D, targets)
        return d_rest - d_t

    assert bool((margin(adv) >= margin(queries.images) - 1e-6).all())


@pytest.mark.parametrize("name", ["evasion", "collision"])
def test_a_query_gets_the_same_result_alone_and_in_a_batch(name):
    metric = metrics.load("l2")
    queries, gallery = _task(metric, n_gallery=6, n_query=6, size=8, noise=0.05, dtype=torch.float64)
    targets = retrieval.collision_targets(queries.matches, len(gallery), queries.sample_id, seed=0)
    attack = attacks.load(name, norm="l2", eps=1.65, steps=8, restarts=2, seed=4)
    batch = attack.perturb(metric, queries, gallery, targets)
    succeeded = []
    for i in range(len(queries)):
        one = attack.perturb(metric, queries.subset(torch.tensor([i])), gallery, targets[i:i + 1])
        torch.testing.assert_close(one[0], batch[i], rtol=0, atol=1e-12)
        succeeded.append(not bool(_correct(metric, one, queries.subset(torch.tensor([i])), gallery)))
    # and in reverse order
    order = torch.arange(len(queries) - 1, -1, -1)
    rev = attack.perturb(metric, queries.subset(order), gallery, targets[order])
    torch.testing.assert_close(rev, batch[order], rtol=0, atol=1e-12)
    if name == "evasion":  # the budget is chosen so that the batch mixes successes and failures
        assert any(succeeded) and not all(succeeded)


# ---------------------------------------------------------------------------- no gradient: Square


class AverageHash(EmbeddingMetric):
    """A toy perceptual hash: 4×4 mean-pooled channels thresholded at their mean, Hamming distance."""

    differentiable = False
    name = "ahash"

    def __init__(self):
        super().__init__()
        self.calls = 0

    def embed(self, x):
        self.calls += 1
        small = F.adaptive_avg_pool2d(x, 4)
        return (small > small.mean(dim=(1, 2, 3), keepdim=True)).flatten(1).float()

    def compare(self, ex, ey):
        return (ex != ey).float().mean(1)


@pytest.mark.parametrize("name", ["evasion", "collision"])
def test_a_metric_without_gradient_goes_through_square(name):
    metric = AverageHash()
    queries, gallery = _task(metric, n_gallery=6, n_query=4, size=16, noise=0.02)
    targets = retrieval.collision_targets(queries.matches, len(gallery), queries.sample_id, seed=0)
    with pytest.raises(SuiteError, match="no gradient"):
        attacks.load(name, method="pgd").perturb(metric, queries, gallery, targets)
    attack = attacks.load(name, norm="linf", eps=0.1, n_queries=150, seed=2)
    assert attack.method_for(metric) == "square"
    adv = attack.perturb(metric, queries, gallery, targets)
    assert attack.last_gradient_evaluations == 0 and metric.calls > 50  # Square queried the hash
    assert bool((lp_norm(adv - queries.images, "linf") <= 0.1 * (1 + 1e-5)).all())
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    D = retrieval.query_distances(metric, adv, gallery)
    if name == "evasion":
        assert retrieval.recall_at_1(retrieval.top1(D, queries.matches)[2]) < 1
    else:
        assert bool(retrieval.target_top1(D, targets)[2].any())
    # each query runs alone with its own seed: the same result alone as in the batch
    one = attack.perturb(metric, queries.subset(torch.tensor([2])), gallery, targets[2:3])
    assert torch.equal(one[0], adv[2])


# ---------------------------------------------------------------------------- options and misuse


@pytest.mark.parametrize("options,message", [
    ({"steps": 0}, "steps must be an integer ≥ 1"),
    ({"method": "bfgs"}, "method must be one of auto, pgd, square"),
    ({"p_init": 1.5}, "p_init"),
    ({"p_init": 0}, "p_init"),
    ({"n_queries": 0}, "n_queries"),
    ({"threat": "all"}, "threat must be one of ref"),
    ({"norm": "l1"}, "norm must be one of"),
    ({"restarts": 2, "random_start": False, "method": "pgd"}, "random_start"),
    ({"stepsize": 0.1}, "bad options"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(SuiteError, match=message) as err:
        attacks.load("evasion", **options)
    assert "\n" not in str(err.value)


def test_misuse_is_refused():
    assert isinstance(attacks.load("evasion"), RetrievalAttackContract)
    assert attacks.load("collision").goal == "collision" and attacks.load("evasion").goal == "evasion"
    metric = metrics.load("l2")
    queries, gallery = _task(metric, n_gallery=4, n_query=2, size=8)
    with pytest.raises(SuiteError, match="needs targets"):
        attacks.load("collision").perturb(metric, queries, gallery)
    with pytest.raises(SuiteError, match="true originals"):
        attacks.load("collision").perturb(metric, queries, gallery, torch.tensor([0, 3]))
    with pytest.raises(SuiteError, match="gallery indices"):
        attacks.load("collision").perturb(metric, queries, gallery, torch.tensor([2, 4]))
    with pytest.raises(SuiteError, match="retrieval attack"):
        attacks.load("evasion").perturb(metric, make_triplets(2, size=8))
