"""Randomized smoothing and center smoothing.

The statistics of suite.smoothing are checked against independent computations (the
binomial tail summed with math.comb, statistics.NormalDist, sorting); the sampling loops
of suite.smoothed run on toy metrics whose smoothed probabilities are known in closed
form (a linear decision smoothed by Gaussian noise: Φ(margin/(σ‖w‖))), where the worst
perturbation is known too, and on the real ``l2`` (its decision is a half-space: the
exact bisector radius is the truth) and a random tiny LipSim, through the metric contract.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from scipy import stats

import metrics
from metrics.base import EmbeddingMetric, Metric
from suite import smoothing
from suite.errors import SuiteError
from suite.smoothed import center_smoothing_bound, certify_smoothed, sample_seed
from suite.types import Triplets

pytestmark = pytest.mark.usefixtures("one_thread")

PHI = statistics.NormalDist()


def _binomial_tail(k: int, n: int, p: float) -> float:
    """``P(Bin(n, p) ≥ k)`` summed term by term."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def _cp_by_bisection(k: int, n: int, alpha: float) -> float:
    """The ``q`` with ``P_q(Bin(n, q) ≥ k) = alpha`` (the definition of the Clopper–Pearson lower bound)."""
    if k == 0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _binomial_tail(k, n, mid) < alpha else (lo, mid)
    return (lo + hi) / 2


# ------------------------------------------------------------------------------ statistics


@pytest.mark.parametrize("k,n,alpha,expected", [
    (10, 10, 0.05, 0.05 ** (1 / 10)),        # k = n: alpha^(1/n)
    (100, 100, 0.001, 0.001 ** (1 / 100)),   # the paper's alpha, n0-sized sample
    (1, 1, 0.05, 0.05),
    (0, 50, 0.05, 0.0),
    (5, 10, 0.025, 0.187086),                # lower end of the classic exact 95% interval for 5/10
])
def test_clopper_pearson_matches_a_hand_table(k, n, alpha, expected):
    assert float(smoothing.clopper_pearson_lower(k, n, alpha)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("k,n,alpha", [(7, 20, 0.2), (50, 100, 0.001), (99, 100, 0.001), (380, 400, 0.05),
                                       (1, 30, 0.1)])
def test_clopper_pearson_solves_the_binomial_tail_equation(k, n, alpha):
    assert float(smoothing.clopper_pearson_lower(k, n, alpha)) == pytest.approx(_cp_by_bisection(k, n, alpha), abs=1e-9)


def test_clopper_pearson_covers_every_proportion_with_probability_at_least_1_minus_alpha():
    n, alpha = 30, 0.1
    lower = smoothing.clopper_pearson_lower(torch.arange(n + 1), n, alpha).tolist()
    for p in [i / 97 for i in range(1, 97)]:
        coverage = sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1) if lower[k] <= p)
        assert coverage >= 1 - alpha


def test_smoothed_radius_is_sigma_times_the_normal_quantile_and_zero_up_to_a_half():
    p = torch.tensor([0.3, 0.5, 0.5000001, 0.6, 0.9, 0.999], dtype=torch.float64)
    expected = [0.0, 0.0] + [0.25 * PHI.inv_cdf(v) for v in p[2:].tolist()]
    torch.testing.assert_close(smoothing.smoothed_radius(p, 0.25), torch.tensor(expected, dtype=torch.float64))


def test_per_image_radius_covers_three_images_each_moved_by_less_than_it():
    gen = torch.Generator().manual_seed(0)
    joint = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64)
    eps = smoothing.per_image_radius(joint, 3)
    for _ in range(20):  # three perturbations of norm ≤ eps·(1 − 1e-9): the concatenation stays inside R
        deltas = torch.randn(3, 3, 7, generator=gen, dtype=torch.float64)
        deltas = deltas / deltas.norm(dim=2, keepdim=True) * (eps * (1 - 1e-9))[None, :, None]
        scale = torch.rand(3, 3, 1, generator=gen, dtype=torch.float64)
        assert ((deltas * scale).permute(1, 0, 2).flatten(1).norm(dim=1) < joint).all()
    at_eps = torch.full((3, 3), 1.0, dtype=torch.float64) * eps[None]  # all three at eps: exactly R
    torch.testing.assert_close(at_eps.pow(2).sum(0).sqrt(), joint)
    torch.testing.assert_close(smoothing.per_image_radius(joint, 1), joint)


def test_scores_follow_the_smoothed_decision_and_abstentions_score_the_worst():
    judge = torch.tensor([0.8, 0.8, 0.8, 0.3], dtype=torch.float64)
    decision = torch.tensor([smoothing.X0, smoothing.X1, smoothing.ABSTAIN, smoothing.X0])
    radius = torch.tensor([0.5, 0.1, 0.0, 0.2], dtype=torch.float64)
    expected = {None: [0.2, 0.8, 0.2, 0.7], 0.15: [0.2, 0.2, 0.2, 0.7], 0.2: [0.2, 0.2, 0.2, 0.3]}
    for eps, scores in expected.items():  # radius == eps is not certified
        got = (smoothing.decision_score(decision, judge) if eps is None
               else smoothing.smoothed_certified_score(decision, radius, judge, eps))
        torch.testing.assert_close(got, torch.tensor(scores, dtype=torch.float64))


def test_outcomes_count_ties_apart_and_the_guess_is_never_a_tie():
    d0 = torch.tensor([0.1, 0.5, 0.3, float("nan"), 0.2])
    d1 = torch.tensor([0.2, 0.4, 0.3, 0.1, 0.9])
    assert smoothing.outcome_counts(d0, d1).tolist() == [2, 1, 2]
    assert smoothing.select_class(torch.tensor([[2, 1, 9], [1, 2, 9], [3, 3, 0]])).tolist() == [0, 1, 0]


# ------------------------------------------------------------------- linear toys, closed form


class ProjectionGap(Metric):
    """``d(ref, x) = |⟨w, ref⟩ − ⟨w, x⟩|``: x1 is closer iff ``⟨w, ref⟩`` is on its side of the midpoint.

    Under noise on the reference only, ``⟨w, ref + N⟩ ~ N(s, σ²‖w‖²)``, so the decision's
    probability is ``Φ(|s − m|/(σ‖w‖))`` with ``m = (c0 + c1)/2``, and the exact radius of the
    smoothed decision is ``|s − m|/‖w‖``, reached by moving ref along ``−sign(s − m)·ŵ``.
    """

    name = "projection-gap"

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = w
        self.represented = 0

    def project(self, x):
        return (x.double() * self.w).flatten(1).sum(1)

    def represent(self, x):
        self.represented += x.shape[0]
        return self.project(x)[:, None]

    def distance_to(self, x, r):
        return (self.project(x) - r[:, 0]).abs()

    def distance(self, x, y):
        return self.distance_to(x, self.represent(y))

    def truth(self, ref, x0, x1, sigma):
        """``(class, probability, radius)`` of the smoothed decision under threat ``ref``, exactly."""
        s, c0, c1 = self.project(ref), self.project(x0), self.project(x1)
        side = torch.sign(c1 - c0) * (s - (c0 + c1) / 2)  # > 0: x1 closer
        w = self.w.double().norm()
        p = torch.tensor([PHI.cdf(v) for v in (side.abs() / (sigma * w)).tolist()], dtype=torch.float64)
        return torch.where(side > 0, smoothing.X1, smoothing.X0), p, side.abs() / w


class CandidateProjection(Metric):
    """``d(ref, x) = ⟨w, x⟩``: x1 closer iff ``⟨w, x0 − x1⟩ > 0``. Under noise on all three images the
    statistic is ``N(⟨w, x0 − x1⟩, 2σ²‖w‖²)``: probability ``Φ(|g|/(σ√2‖w‖))``, joint radius
    ``|g|/(√2‖w‖)``, per-image radius ``|g|/(2‖w‖)`` (x0 and x1 each moved by ε along ∓ŵ)."""

    name = "candidate-projection"

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = w

    def distance(self, x, y):
        return (y.double() * self.w).flatten(1).sum(1) + 0 * x.flatten(1)[:, 0]

    def truth(self, x0, x1, sigma):
        g = ((x0 - x1).double() * self.w).flatten(1).sum(1)
        w = self.w.double().norm()
        p = torch.tensor([PHI.cdf(v) for v in (g.abs() / (sigma * math.sqrt(2) * w)).tolist()], dtype=torch.float64)
        return torch.where(g > 0, smoothing.X1, smoothing.X0), p, g.abs() / (2 * w)


def _toy_triplets(gen: torch.Generator, count: int = 4, size: int = 4) -> Triplets:
    ref = torch.rand(count, 3, size, size, generator=gen, dtype=torch.float64)
    x0 = torch.rand(count, 3, size, size, generator=gen, dtype=torch.float64)
    x1 = torch.rand(count, 3, size, size, generator=gen, dtype=torch.float64)
    return Triplets(ref, x0, x1, torch.rand(count, generator=gen), [f"t{i}" for i in range(count)])


def _toy_setup(z=(0.8, 1.2, 1.6, 2.0, 2.5), sigma=0.1):
    """The projection toy and triplets whose smoothed probabilities are ``Φ(z)`` (0.79 … 0.994), on both sides."""
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(3, 4, 4, generator=gen, dtype=torch.float64)
    metric = ProjectionGap(w)
    batch = _toy_triplets(gen, count=len(z))
    s = metric.project(batch.ref)
    mid = (metric.project(batch.x0) + metric.project(batch.x1)) / 2
    side = torch.tensor([(-1.0) ** i for i in range(len(z))], dtype=torch.float64)
    target = mid + side * torch.tensor(z, dtype=torch.float64) * sigma * w.norm()
    ref = batch.ref + ((target - s) / w.norm()).view(-1, 1, 1, 1) * (w / w.norm())  # ⟨w, ref⟩ = target
    return metric, batch.with_images(ref, batch.x0, batch.x1), sigma


SEEDS = range(50)
TOY = dict(n0=20, n=500, alpha=0.05, chunk=520)


def _allowed_misses(trials: int, alpha: float) -> int:
    """Misses of a level-alpha bound that a sound procedure exceeds with probability below 1e-3."""
    return int(stats.binom.ppf(0.999, trials, alpha))


def test_p_lower_stays_below_the_closed_form_probability_with_the_stated_confidence():
    metric, batch, sigma = _toy_setup()
    cls, p_true, true_radius = metric.truth(batch.ref, batch.x0, batch.x1, sigma)
    misses, trials, radii = 0, 0, []
    for seed in SEEDS:
        out = certify_smoothed(metric, batch, threat="ref", sigma=sigma, seed=seed, **TOY)
        misses += int((out.p_lower > p_true).sum())
        trials += len(batch)
        certified = out.decision != smoothing.ABSTAIN
        assert (out.decision[certified] == cls[certified]).all()
        torch.testing.assert_close(out.radius, smoothing.smoothed_radius(out.p_lower, sigma))
        p_guess = torch.where(out.guess == cls, p_true, 1 - p_true)
        se = (p_guess * (1 - p_guess) / TOY["n"]).sqrt()
        assert ((out.top_count / TOY["n"] - p_guess).abs() <= 4.5 * se + 1e-12).all()
        radii.append(out.radius)
    assert misses <= _allowed_misses(trials, TOY["alpha"])
    # the radius matches σΦ⁻¹(p) to sampling error: its mean over the seeds is the exact expectation
    # of σΦ⁻¹(p_lower(K))⁺ over K ~ Bin(n, p) (a wrong guess, rarer than 0.3% here, gives 0)
    k = torch.arange(TOY["n"] + 1)
    f = smoothing.smoothed_radius(smoothing.clopper_pearson_lower(k, TOY["n"], TOY["alpha"]), sigma)
    radii = torch.stack(radii)
    assert (radii <= true_radius).float().mean() >= 1 - TOY["alpha"]
    for i, p in enumerate(p_true.tolist()):
        pmf = torch.tensor(stats.binom.pmf(k.numpy(), TOY["n"], p), dtype=torch.float64)
        mean, sd = (pmf * f).sum(), ((pmf * (f - (pmf * f).sum()) ** 2).sum()).sqrt()
        assert abs(float(radii[:, i].mean() - mean)) <= 4 * float(sd) / math.sqrt(len(SEEDS)) + 1e-3 * sigma
        assert float(mean) == pytest.approx(float(true_radius[i]), rel=0.3)


def test_threat_all_noises_the_three_images_and_reports_the_per_image_radius():
    gen = torch.Generator().manual_seed(8)
    metric = CandidateProjection(torch.randn(3, 4, 4, generator=gen, dtype=torch.float64))
    batch = _toy_triplets(gen, count=4)
    _, _, scale = metric.truth(batch.x0, batch.x1, 1.0)
    sigma = float(scale.median()) / 1.2
    cls, p_true, per_image_truth = metric.truth(batch.x0, batch.x1, sigma)
    misses = 0
    for seed in range(20):
        out = certify_smoothed(metric, batch, threat="all", sigma=sigma, seed=seed, **TOY)
        covered = out.p_lower <= p_true
        misses += int((~covered).sum())
        torch.testing.assert_close(out.radius, out.joint_radius / math.sqrt(3))
        # wherever the bound holds, the √3 conversion stays below the exact per-image radius |g|/(2‖w‖)
        assert (out.radius[covered] <= per_image_truth[covered]).all()
        certified = out.decision != smoothing.ABSTAIN
        assert (out.decision[certified] == cls[certified]).all()
        assert out.forwards.tolist() == [3 * (TOY["n0"] + TOY["n"])] * len(batch)
    assert misses <= _allowed_misses(20 * len(batch), TOY["alpha"])


def test_the_worst_perturbation_inside_the_radius_flips_at_most_alpha_of_certified_samples():
    metric, batch, sigma = _toy_setup()
    w_hat = metric.w / metric.w.norm()
    cls, _, true_radius = metric.truth(batch.ref, batch.x0, batch.x1, sigma)
    flips, certified_total, gen = 0, 0, torch.Generator().manual_seed(99)
    for seed in SEEDS:
        out = certify_smoothed(metric, batch, threat="ref", sigma=sigma, seed=seed, **TOY)
        certified = (out.decision != smoothing.ABSTAIN).nonzero().flatten()
        certified_total += len(certified)
        for i in certified.tolist():
            s = metric.project(batch.ref[i:i + 1])
            c0, c1 = metric.project(batch.x0[i:i + 1]), metric.project(batch.x1[i:i + 1])
            toward = -torch.sign(s - (c0 + c1) / 2)  # the worst direction: ⟨w, ref⟩ straight to the midpoint
            eps = float(out.radius[i]) * (1 - 1e-9)
            moved = batch.ref[i:i + 1] + eps * float(toward) * w_hat
            new_cls, p_moved, _ = metric.truth(moved, batch.x0[i:i + 1], batch.x1[i:i + 1], sigma)
            flipped = bool(new_cls != out.decision[i]) or float(p_moved) <= 0.5
            if seed < 10:  # the same judgement from fresh samples, drawn here (independent of suite.smoothed)
                noisy = moved + sigma * torch.randn(4000, *moved.shape[1:], generator=gen, dtype=torch.float64)
                outcome = smoothing.base_outcome(*metric.pair_distances(noisy, batch.x0[i:i + 1], batch.x1[i:i + 1]))
                share = float((outcome == out.decision[i]).double().mean())
                if abs(float(p_moved) - 0.5) > 5 * math.sqrt(0.25 / 4000):
                    assert (share <= 0.5) == flipped
            flips += flipped
            # the attack is the worst one: a little beyond the exact radius it always flips
            beyond = batch.ref[i:i + 1] + float(true_radius[i]) * 1.01 * float(toward) * w_hat
            assert metric.truth(beyond, batch.x0[i:i + 1], batch.x1[i:i + 1], sigma)[0] != cls[i]
    assert certified_total >= 0.8 * len(SEEDS) * len(batch)
    assert flips <= _allowed_misses(certified_total, TOY["alpha"]), (flips, certified_total)


def test_candidates_are_represented_once_and_the_counts_are_as_stated():
    metric, batch, sigma = _toy_setup()
    out = certify_smoothed(metric, batch, threat="ref", sigma=sigma, n0=30, n=70, chunk=16, alpha=0.01)
    assert metric.represented == 2 * len(batch)
    assert out.forwards.tolist() == [30 + 70 + 2] * len(batch)
    assert (out.top_count <= 70).all() and (out.seconds > 0).all()
    assert ((out.radius == 0) == (out.decision == smoothing.ABSTAIN)).all()


def test_seeded_runs_repeat_and_do_not_depend_on_the_batch_or_the_progress_callback():
    metric, batch, sigma = _toy_setup()
    calls = []
    a = certify_smoothed(metric, batch, sigma=sigma, n0=10, n=60, chunk=25, seed=3,
                         progress=lambda done, total: calls.append((done, total)))
    b = certify_smoothed(metric, batch, sigma=sigma, n0=10, n=60, chunk=25, seed=3)
    alone = certify_smoothed(metric, batch.subset(torch.tensor([2])), sigma=sigma, n0=10, n=60, chunk=25, seed=3)
    other = certify_smoothed(metric, batch, sigma=sigma, n0=10, n=60, chunk=25, seed=4)
    assert torch.equal(a.p_lower, b.p_lower) and torch.equal(a.decision, b.decision)
    assert a.top_count[2] == alone.top_count[0]
    assert not torch.equal(a.top_count, other.top_count)
    assert calls[-1] == (len(batch) * 70, len(batch) * 70)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert sample_seed(3, "t2") == sample_seed(3, "t2") != sample_seed(3, "t1")


def test_bad_options_are_named():
    metric, batch, sigma = _toy_setup()
    with pytest.raises(SuiteError, match="threat"):
        certify_smoothed(metric, batch, threat="both", sigma=sigma)
    with pytest.raises(SuiteError, match="sigma"):
        certify_smoothed(metric, batch, sigma=0.0)
    with pytest.raises(SuiteError, match="alpha"):
        certify_smoothed(metric, batch, sigma=sigma, alpha=1.5)


# ------------------------------------------------------------------------- real metrics


def _near_triplets(gen: torch.Generator, count: int, size: int, margins: list[float]) -> Triplets:
    """Candidates on either side of ``ref`` along one unit direction, the bisector at distance ``margin``."""
    ref = 0.5 + 0.1 * torch.rand(count, 3, size, size, generator=gen)
    e = torch.randn(count, 3, size, size, generator=gen)
    e = e / e.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    t0 = torch.full((count,), 1.0)
    t1 = t0 + 2 * torch.tensor(margins)  # bisector of ref + t0·e and ref − t1·e is at (t1 − t0)/2 from ref
    x0 = ref + t0.view(-1, 1, 1, 1) * e
    x1 = ref - t1.view(-1, 1, 1, 1) * e
    return Triplets(ref, x0, x1, torch.full((count,), 0.3), [f"n{i}" for i in range(count)])


def test_on_the_l2_metric_the_radius_matches_the_exact_bisector_radius():
    gen = torch.Generator().manual_seed(20)
    metric = metrics.load("l2")
    batch = _near_triplets(gen, 4, 64, [0.25, 0.35, 0.5, 0.6])
    exact = metric.certified_radius(batch.ref, batch.x0, batch.x1).double()  # independent of smoothing
    sigma = 0.25
    for seed in range(3):
        out = certify_smoothed(metric, batch, sigma=sigma, n0=20, n=400, alpha=0.01, seed=seed, chunk=210)
        assert (out.decision == smoothing.X0).all()
        p_true = torch.tensor([PHI.cdf(v) for v in (exact / sigma).tolist()], dtype=torch.float64)
        assert (out.p_lower <= p_true).all()
        assert (out.radius <= exact).all() and (out.radius >= 0.6 * exact).all()
        certified = out.certified_score(batch.judge, 0.2)
        torch.testing.assert_close(certified.float(), torch.where(out.radius > 0.2, 0.7, 0.3).float())


def test_a_random_tiny_lipsim_goes_through_the_contract_under_both_threats():
    metric = metrics.load("lipsim", preset="tiny")
    gen = torch.Generator().manual_seed(21)
    batch = _near_triplets(gen, 2, 64, [0.2, 0.4])
    for threat in ("ref", "all"):
        out = certify_smoothed(metric, batch, threat=threat, sigma=0.12, n0=8, n=40, alpha=0.01, chunk=40, seed=1)
        again = certify_smoothed(metric, batch.subset(torch.tensor([1])), threat=threat, sigma=0.12, n0=8, n=40,
                                 alpha=0.01, chunk=40, seed=1)
        assert out.top_count[1] == again.top_count[0]
        assert set(out.decision.tolist()) <= {smoothing.X0, smoothing.X1, smoothing.ABSTAIN}
        best = 0.12 * PHI.inv_cdf(0.01 ** (1 / 40)) / (math.sqrt(3) if threat == "all" else 1)
        assert ((out.radius >= 0) & (out.radius <= best + 1e-12)).all()
        assert out.forwards.tolist() == [48 + 2 if threat == "ref" else 3 * 48] * 2
        score = out.score(batch.judge)
        assert ((score >= 0.3 - 1e-9) & (score <= 0.7 + 1e-9)).all()


# ---------------------------------------------------------------------------- center smoothing


def test_meb_center_is_within_twice_the_smallest_half_ball():
    gen = torch.Generator().manual_seed(30)
    for n in (9, 10, 51):
        z = torch.randn(n, generator=gen, dtype=torch.float64) * torch.rand(1, generator=gen, dtype=torch.float64)
        i, r = smoothing.meb_center((z[:, None] - z[None, :]).abs())
        half = (n + 1) // 2
        s = z.sort().values
        best = float((s[half - 1:] - s[:n - half + 1]).min()) / 2  # shortest interval holding ⌈n/2⌉ points
        assert best - 1e-12 <= r <= 2 * best + 1e-12
        assert int(((z - z[i]).abs() <= r).sum()) >= half


def test_order_statistic_bounds_the_true_quantile_with_probability_1_minus_alpha():
    gen = torch.Generator().manual_seed(31)
    n, alpha2, p = 400, 0.1, 0.7
    q = p + smoothing.hoeffding_slack(n, alpha2)
    true = PHI.inv_cdf((1 + p) / 2)  # p-quantile of |N(0, 1)|
    below = sum(smoothing.order_statistic(torch.randn(n, generator=gen).abs(), q) < true for _ in range(300))
    assert below <= _allowed_misses(300, alpha2)
    assert smoothing.order_statistic(torch.arange(10.0), 1.01) == math.inf
    assert smoothing.order_statistic(torch.arange(10.0), 0.25) == 2.0  # ⌈2.5⌉ = 3rd smallest


@pytest.mark.parametrize("inside,n,expected", [(5000, 10000, True), (4500, 10000, False), (50, 100, False),
                                               (10000, 10000, True)])
def test_center_check_needs_half_the_mass_up_to_delta_and_enough_samples(inside, n, expected):
    assert smoothing.center_check(inside, n, delta=0.05, alpha1=0.01) is expected


def test_quantile_level_is_the_normal_shift_plus_hoeffding():
    level = smoothing.center_quantile_level(0.1, 0.25, 0.05, 1000, 0.005)
    expected = PHI.cdf(PHI.inv_cdf(0.55) + 0.4) + math.sqrt(math.log(200) / 2000)
    assert level == pytest.approx(expected, abs=1e-12)
    assert smoothing.center_bound(0.2) == pytest.approx(0.6)


def test_cosine_distance_is_half_the_squared_chordal_and_only_the_chordal_is_a_metric():
    gen = torch.Generator().manual_seed(32)
    a, b, c = (torch.randn(100, 5, generator=gen, dtype=torch.float64) for _ in range(3))
    cos = 1 - torch.nn.functional.cosine_similarity(a, b, dim=1)
    torch.testing.assert_close(smoothing.cosine_from_chordal(smoothing.chordal_distance(a, b)), cos)
    ab, bc, ac = (smoothing.chordal_distance(u, v) for u, v in ((a, b), (b, c), (a, c)))
    assert (ac <= ab + bc + 1e-12).all()
    theta = 0.3  # directions at angles 0, θ, 2θ: 1 − cos fails the triangle inequality
    u = [torch.tensor([[math.cos(k * theta), math.sin(k * theta)]], dtype=torch.float64) for k in range(3)]
    one_minus_cos = [float(1 - torch.nn.functional.cosine_similarity(u[i], u[j])) for i, j in ((0, 1), (1, 2), (0, 2))]
    assert one_minus_cos[2] > one_minus_cos[0] + one_minus_cos[1]


class LinearEmbedding(EmbeddingMetric):
    """``f(x) = A·vec(x) + b`` with Euclidean (or, with ``cosine``, ``1 − cos``) distance."""

    name = "linear-embedding"

    def __init__(self, a: torch.Tensor, cosine: bool = False, offset: torch.Tensor | None = None):
        super().__init__()
        self.a, self.cosine = a, cosine
        self.offset = torch.zeros(a.shape[0], dtype=a.dtype) if offset is None else offset

    def embed(self, x):
        return x.flatten(1).double() @ self.a.T + self.offset

    def compare(self, ex, ey):
        if self.cosine:
            return 1 - torch.nn.functional.cosine_similarity(ex, ey, dim=1)
        return (ex - ey).norm(dim=1)


CS = dict(n0=1000, n=2000, alpha=0.05, delta=0.1)


@pytest.mark.parametrize("cosine", [False, True])
def test_center_smoothing_bound_holds_against_the_worst_shift_of_a_linear_embedding(cosine):
    gen = torch.Generator().manual_seed(33)
    a = torch.randn(2, 48, generator=gen, dtype=torch.float64) * torch.tensor([[1.0], [0.2]], dtype=torch.float64)
    if cosine:  # a constant third coordinate keeps the embeddings away from the origin
        a = torch.cat([a, torch.zeros(1, 48, dtype=torch.float64)])
        metric = LinearEmbedding(a, cosine, offset=torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64))
    else:
        metric = LinearEmbedding(a)
    x = torch.rand(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    sigma, eps = 0.2, 0.1
    output = "cosine" if cosine else "euclidean"
    here = center_smoothing_bound(metric, x, eps, sigma=sigma, output=output, seed=0, **CS)
    assert not here.abstained.any()
    if cosine:
        torch.testing.assert_close(here.bound, smoothing.cosine_from_chordal(3 * here.radius))
    else:
        torch.testing.assert_close(here.bound, 3 * here.radius)
    top = torch.linalg.svd(a, full_matrices=False).Vh[0]  # the input direction that moves f the most
    shift = (eps * top).view(1, 3, 4, 4)
    moved = []
    for seed in range(1, 9):
        there = center_smoothing_bound(metric, x + shift, eps, sigma=sigma, output=output, seed=seed, **CS)
        ok = ~there.abstained
        if cosine:
            d = 1 - torch.nn.functional.cosine_similarity(here.center, there.center, dim=1)
        else:
            d = (here.center - there.center).norm(dim=1)
        assert (d[ok] <= here.bound[ok]).all()
        moved.append(smoothing.chordal_distance(here.center, there.center) if cosine else d)
    # the bound is not vacuous: in the output distance it is within a small factor of how far the centers move
    assert (3 * here.radius < 15 * torch.stack(moved).mean(0)).all()
    assert (here.smoothing_error >= 0).all() and (here.forwards == 2 * 1000 + 2000 + 2).all()


def test_center_smoothing_refuses_what_it_cannot_certify():
    gen = torch.Generator().manual_seed(34)
    metric = LinearEmbedding(torch.randn(3, 48, generator=gen, dtype=torch.float64), cosine=True)
    x = torch.rand(1, 3, 4, 4, generator=gen, dtype=torch.float64)
    with pytest.raises(SuiteError, match="output='euclidean'"):
        center_smoothing_bound(metric, x, 0.1, sigma=0.2, output="euclidean", **CS)
    with pytest.raises(SuiteError, match="n0 ≥"):
        center_smoothing_bound(metric, x, 0.1, sigma=0.2, n0=50, n=100, delta=0.05)
    with pytest.raises(SuiteError, match="no"):
        center_smoothing_bound(metrics.load("ssim"), torch.rand(1, 3, 16, 16), 0.1, sigma=0.2, **CS)
    far = center_smoothing_bound(metric, x, [0.01, 5.0], sigma=0.2, output="cosine", **CS)
    assert far.bound.shape == (1, 2) and far.bound[0, 1] == 2.0 and far.radius[0, 1] == math.inf


def test_center_smoothing_runs_on_a_random_tiny_lipsim():
    metric = metrics.load("lipsim", preset="tiny")
    x = 0.5 + 0.1 * torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(35))
    out = center_smoothing_bound(metric, x, [0.05, 0.1], sigma=0.12, n0=80, n=160, alpha=0.05, delta=0.2,
                                 candidates=12, chunk=80)
    assert out.bound.shape == (1, 2) and (out.bound <= 2).all() and (out.bound[:, 0] <= out.bound[:, 1]).all()
    assert out.forwards.tolist() == [80 + 12 + 80 + 160 + 2]
    assert out.center.shape == (1, metric.embed(x).shape[1])
