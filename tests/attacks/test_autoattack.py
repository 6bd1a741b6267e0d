import logging
import sys

import pytest
import torch

import attacks
import metrics
from attack_helpers import budget_used, make_triplets, scores
from attacks.autoattack import ReferenceView, separated_groups
from attacks.objective import TwoAFCObjective
from metrics.base import EmbeddingMetric
from suite.errors import SuiteError
from suite.types import Triplets

FAST = {"n_iter": 5, "n_queries": 30}


class AlignmentProbe(EmbeddingMetric):
    """Pixel ℓ2 distance that fails loudly when a reference meets another triplet's candidate.

    Every triplet has its own brightness level (mean pixel value); a perturbation within
    the test budgets moves the mean by far less than half the spacing of the levels.
    """

    def __init__(self, spacing: float):
        super().__init__()
        self.spacing = spacing

    def embed(self, x):
        return x.flatten(1)

    def compare(self, ex, ey):
        gap = (ex.mean(1) - ey.mean(1)).abs()
        if bool((gap > self.spacing / 2).any()):
            raise AssertionError(f"misaligned: compared images of different triplets (gap {gap.max():.3f})")
        return ((ex - ey).pow(2).sum(1) + 1e-20).sqrt()


def probe_batch(n: int, seed: int = 0):
    """Triplets at distinct brightness levels; judges make the metric right except on sample 0."""
    g = torch.Generator().manual_seed(seed)
    levels = torch.linspace(0.3, 0.7, max(n, 2))[:n]
    spacing = 0.4 / (max(n, 2) - 1)
    ref = levels.view(-1, 1, 1, 1) + 0.03 * (2 * torch.rand(n, 3, 16, 16, generator=g) - 1)
    x0 = (ref + 0.05 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    x1 = (ref + 0.05 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    probe = AlignmentProbe(spacing)
    with torch.no_grad():
        x1_closer = probe.distance(ref, x1) < probe.distance(ref, x0)
    judge = torch.where(x1_closer, 0.8, 0.2)
    if n > 2:
        judge[0] = 1 - judge[0]  # the metric is already wrong here: AutoAttack drops it from every subset
        judge[n // 2] = 0.5
    return probe, Triplets(ref, x0, x1, judge, [f"s{i}" for i in range(n)])


def _check_ref_contract(clean, adv, norm, eps):
    assert torch.equal(adv.x0, clean.x0) and torch.equal(adv.x1, clean.x1)
    assert (budget_used(clean.ref, adv.ref, norm) <= eps + 1e-6).all()
    assert adv.ref.min() >= 0 and adv.ref.max() <= 1


@pytest.mark.parametrize("n", [1, 2, 5, 9])
@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("linf", 0.02)])
def test_autoattack_survives_subsets_of_any_size(n, norm, eps):
    probe, batch = probe_batch(n)
    adv = attacks.load("autoattack", norm=norm, eps=eps, **FAST).perturb(probe, batch)
    _check_ref_contract(batch, adv, norm, eps)
    natural, attacked = scores(probe, batch), scores(probe, adv)
    assert (attacked <= natural).all()
    half = batch.judge == 0.5
    assert torch.equal(adv.ref[half], batch.ref[half]) and (attacked[half] == 0.5).all()


def test_the_probe_catches_a_wrapper_aligned_with_the_full_batch():
    """Teeth: pyautoattack really calls the model on subsets, and the probe notices misalignment."""
    from pyautoattack import AutoAttack as PyAutoAttack

    probe, batch = probe_batch(5)
    e0, e1 = probe.embed(batch.x0), probe.embed(batch.x1)

    class FirstRows(torch.nn.Module):
        def forward(self, q):
            e, n = probe.embed(q), q.shape[0]
            return torch.stack([-probe.compare(e, e0[:n]), -probe.compare(e, e1[:n])], dim=1)

    aa = PyAutoAttack(FirstRows(), attacks=["apgd-ce"], eps=0.5, norm="L2", seed=0, version="custom")
    aa.verbose = False
    aa.apgd.n_iter = 2
    logging.getLogger("auto-attack").disabled = True
    try:
        with pytest.raises(AssertionError, match="misaligned"):
            aa.run_standard_evaluation(batch.ref, (batch.judge > 0.5).long(), batch_size=5)
    finally:
        logging.getLogger("auto-attack").disabled = False


def test_square_alone_never_touches_the_candidates():
    probe, batch = probe_batch(7, seed=1)
    attack = attacks.load("autoattack", norm="l2", eps=0.5, attacks=["square"], n_queries=60)
    adv = attack.perturb(probe, batch)
    _check_ref_contract(batch, adv, "l2", 0.5)
    assert (scores(probe, adv) <= scores(probe, batch)).all()


def test_duplicate_references_run_in_separate_groups():
    probe, batch = probe_batch(6, seed=2)
    ref = batch.ref.clone()
    ref[4] = ref[1]
    batch = Triplets(ref, batch.x0, batch.x1, batch.judge, batch.sample_id)
    probe.spacing = 1.0  # levels no longer identify triplets 1 and 4; geometry must not need them to
    groups = separated_groups(ref, "l2", 0.5)
    assert sorted(i for g in groups for i in g) == list(range(6))
    assert not any(1 in g and 4 in g for g in groups)
    adv = attacks.load("autoattack", norm="l2", eps=0.5, **FAST).perturb(probe, batch)
    _check_ref_contract(batch, adv, "l2", 0.5)
    assert (scores(probe, adv) <= scores(probe, batch)).all()


def test_separated_groups_are_more_than_two_radii_apart():
    refs = make_triplets(12, size=4, lo=0.0, hi=1.0).ref
    for norm, radius in (("l2", 0.6), ("linf", 0.3)):
        for group in separated_groups(refs, norm, radius):
            for a in group:
                for b in group:
                    if a != b:
                        d = refs[a] - refs[b]
                        size = d.norm() if norm == "l2" else d.abs().max()
                        assert size > 2 * radius


def test_reference_view_refuses_a_query_outside_every_ball(l2, triplets):
    batch = triplets(3)
    view = ReferenceView(TwoAFCObjective(l2, batch, "ref"), torch.arange(3), "l2", 0.1)
    assert view.owners(batch.ref[[2, 0]]).tolist() == [2, 0]
    with pytest.raises(SuiteError, match="expected exactly one"):
        view(torch.zeros(1, 3, 16, 16))


def test_reference_view_falls_back_to_an_exact_search_when_the_l2_guess_is_wrong(l2):
    """In ℓ∞ the ℓ2-nearest clean reference need not be the one within ε: the exact check decides."""
    a = torch.full((1, 3, 4, 4), 0.1)
    b = a + 0.2
    b.view(-1)[0] += 0.3  # ‖a − b‖∞ = 0.5 > 2·0.21, but b is ℓ2-closer to the query below
    batch = Triplets(torch.cat([a, b]), torch.cat([a, b]), torch.cat([a, b]), torch.tensor([0.9, 0.9]), ["a", "b"])
    view = ReferenceView(TwoAFCObjective(l2, batch, "ref"), torch.arange(2), "linf", 0.21)
    q = a + 0.2
    assert (q - b).norm() < (q - a).norm()
    assert view.owners(q).tolist() == [0]


def test_autoattack_flips_what_the_l2_certificate_allows(l2):
    batch = make_triplets(60, size=8, spread=0.1, seed=4, judge=torch.full((60,), 0.8))
    eps = 0.05
    with torch.no_grad():
        agree = l2.distance(batch.ref, batch.x1) < l2.distance(batch.ref, batch.x0)
    radius = l2.certified_radius(batch.ref, batch.x0, batch.x1)
    adv = attacks.load("autoattack", norm="l2", eps=eps, n_iter=20, n_queries=50).perturb(l2, batch)
    with torch.no_grad():
        now = l2.distance(adv.ref, adv.x1) < l2.distance(adv.ref, adv.x0)
    flipped = now != agree
    weak = agree & (radius < 0.9 * eps)
    assert weak.sum() >= 10
    assert flipped[weak].all()
    assert not flipped[radius > eps].any()


def test_threat_all_perturbs_each_image_within_linf_eps(conv_metric):
    batch = make_triplets(5, judge=torch.tensor([0.9, 0.1, 0.5, 0.7, 0.2]))
    adv = attacks.load("autoattack", norm="linf", eps=0.03, threat="all", **FAST).perturb(conv_metric, batch)
    for name in ("ref", "x0", "x1"):
        a, c = getattr(adv, name), getattr(batch, name)
        assert (budget_used(c, a, "linf") <= 0.03 + 1e-6).all()
        assert a.min() >= 0 and a.max() <= 1
        assert torch.equal(a[2], c[2])
    assert (scores(conv_metric, adv) <= scores(conv_metric, batch)).all()


def test_autoattack_is_deterministic_quiet_and_leaves_global_state_alone(conv_metric, triplets, capsys, caplog):
    batch = triplets(5)
    tracer = sys.gettrace()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with caplog.at_level(logging.DEBUG):
        a = attacks.load("autoattack", norm="linf", eps=0.03, seed=7, **FAST).perturb(conv_metric, batch)
    assert torch.equal(torch.rand(3), expected_next)
    assert sys.gettrace() is tracer
    b = attacks.load("autoattack", norm="linf", eps=0.03, seed=7, **FAST).perturb(conv_metric, batch)
    assert torch.equal(a.ref, b.ref)
    assert capsys.readouterr().out == ""
    assert not [r for r in caplog.records if r.name == "auto-attack"]


@pytest.mark.parametrize("sub,reason", [("apgd-dlr", "≥ 3 classes"), ("apgd-t", "≥ 4 classes"),
                                        ("fab-t", "untargeted FAB"), ("fab", "leave the ε-ball")])
def test_sub_attacks_undefined_on_two_classes_are_refused(sub, reason):
    with pytest.raises(SuiteError, match=reason):
        attacks.load("autoattack", attacks=["apgd-ce", sub])


def test_autoattack_option_errors():
    with pytest.raises(SuiteError, match="threat 'all' needs norm 'linf'"):
        attacks.load("autoattack", norm="l2", threat="all")
    with pytest.raises(SuiteError, match="unknown sub-attack"):
        attacks.load("autoattack", attacks=["pgd"])
    with pytest.raises(SuiteError, match="non-empty list"):
        attacks.load("autoattack", attacks="square")
    default = attacks.load("autoattack")
    assert (default.attacks, default.n_iter, default.restarts, default.n_queries) == (["apgd-ce", "square"], 100, 1, 5000)


def test_autoattack_without_embed():
    ssim = metrics.load("ssim")
    batch = make_triplets(3, judge=torch.tensor([0.9, 0.2, 0.6]))
    adv = attacks.load("autoattack", norm="linf", eps=0.03, **FAST).perturb(ssim, batch)
    _check_ref_contract(batch, adv, "linf", 0.03)
    assert (scores(ssim, adv) <= scores(ssim, batch)).all()


def test_channels_last_inputs_and_metrics_are_handled():
    """pyautoattack reshapes with ``.view``: inputs and gradients must reach it contiguous."""
    from attack_helpers import ConvEmbedding

    class ChannelsLast(ConvEmbedding):
        def embed(self, x):
            return self.net(x.contiguous(memory_format=torch.channels_last))

    metric = ChannelsLast().eval()
    batch = make_triplets(4, judge=torch.tensor([0.9, 0.1, 0.8, 0.3]))
    cl = batch.with_images(*(t.contiguous(memory_format=torch.channels_last) for t in (batch.ref, batch.x0, batch.x1)))
    adv = attacks.load("autoattack", norm="l2", eps=0.5, **FAST).perturb(metric, cl)
    assert torch.equal(adv.x0, batch.x0) and torch.equal(adv.x1, batch.x1)
    assert (budget_used(batch.ref, adv.ref, "l2") <= 0.5 + 1e-6).all()
