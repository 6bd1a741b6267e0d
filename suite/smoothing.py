"""Statistics of randomized smoothing for 2AFC decisions and of center smoothing, as pure functions.

The sampling loops that feed these functions are in :mod:`suite.smoothed`; everything
that turns counts and distances into decisions, probabilities, radii and bounds is
here, each with its formula and proof. Tensors are per sample, ``(B,)``, float64
unless stated.

**Randomized smoothing of a 2AFC decision** (Cohen, Rosenfeld & Kolter, ICML 2019).
The base decision of a triplet has three outcomes (:func:`base_outcome`):
``X0`` (``d0 < d1``), ``X1`` (``d1 < d0``) and ``TIE``, with ``(d0, d1)`` oriented as
distances (:func:`suite.scoring.oriented`). With ``u`` the perturbed input (the
reference for threat ``ref``; the concatenation ``(ref, x0, x1)`` for threat ``all``)
and ``N ~ N(0, σ²I)``, the smoothed decision is ``g(u) = argmax_c P(h(u + N) = c)``.
CERTIFY picks the class ``c_A`` from ``n0`` samples (:func:`select_class`), bounds
``p_A = P(h(u + N) = c_A)`` from below with ``n`` fresh samples
(:func:`clopper_pearson_lower`) and returns the radius ``σ·Φ⁻¹(p_lower)``
(:func:`smoothed_radius`), abstaining when ``p_lower ≤ ½`` (:func:`certify_counts`).

Two deliberate choices:

- The noisy images are **not clamped** to ``[0, 1]``: Cohen et al.'s theorem is about
  ``g`` as a function on ``ℝⁿ`` with Gaussian noise, and clamping would make the
  noise non-Gaussian. A metric therefore sees images outside its usual range; the
  certificate is still about ``g`` at the clean (in-range) input.
- A ``TIE`` is its own outcome and never certified: it counts against whichever
  candidate was picked. With continuous distances ties have probability 0 and this
  equals the base decision ``h = 1[d1 < d0]``; otherwise it is the conservative choice.

**Center smoothing** (Kumar & Goldstein, NeurIPS 2021): :func:`meb_center`,
:func:`center_check`, :func:`center_quantile_level`, :func:`order_statistic`,
:func:`center_bound`, with the proof of the bound in :func:`center_bound`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats

from suite.scoring import certified_score, worst_score

#: outcomes of the base decision (and values of a smoothed decision; ``ABSTAIN`` only there)
X0, X1, TIE, ABSTAIN = 0, 1, 2, -1
#: images perturbed jointly under each threat (their concatenation is what the noise covers)
IMAGES_PER_THREAT = {"ref": 1, "all": 3}


def _f64(value, like: torch.Tensor | None = None) -> torch.Tensor:
    device = None if like is None else like.device
    return torch.as_tensor(value, dtype=torch.float64, device=device)


# ----------------------------------------------------------------------- randomized smoothing


def base_outcome(d0: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
    """The base decision ``X0`` (``d0 < d1``), ``X1`` (``d1 < d0``) or ``TIE`` per sample, int64.

    ``d0``, ``d1`` are oriented distances (lower = closer). A NaN distance compares false
    both ways and counts as a ``TIE``, which is never certified.
    """
    out = torch.full(d0.shape, TIE, dtype=torch.int64, device=d0.device)
    out[d0 < d1] = X0
    out[d1 < d0] = X1
    return out


def outcome_counts(d0: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
    """How often each outcome occurs among the rows of ``(d0, d1)``: int64 ``[#X0, #X1, #TIE]``."""
    return torch.bincount(base_outcome(d0, d1).flatten(), minlength=3)[:3]


def select_class(counts: torch.Tensor) -> torch.Tensor:
    """CERTIFY's guess ``c_A``: the candidate (``X0`` or ``X1``) seen more often among ``n0`` samples.

    ``counts`` is ``(..., 3)`` as from :func:`outcome_counts`. Ties are never a guess;
    equal counts pick ``X0`` (any rule is valid as long as it only looks at the
    selection samples, which are independent of the estimation samples).
    """
    return torch.where(counts[..., X1] > counts[..., X0], X1, X0).to(torch.int64)


def clopper_pearson_lower(k, n, alpha: float) -> torch.Tensor:
    """One-sided Clopper–Pearson lower confidence bound on a binomial proportion, at level ``1 − alpha``.

    ``p_lower(k) = Beta⁻¹(alpha; k, n − k + 1)`` for ``k ≥ 1`` and ``0`` for ``k = 0``
    (the lower end of statsmodels' ``proportion_confint(k, n, 2·alpha, "beta")``,
    which Cohen et al. use). For ``k = n`` it is ``alpha^(1/n)``.

    Proof of coverage. For ``K ~ Bin(n, p)``, ``P(K ≥ k) = I_p(k, n − k + 1)``, the
    regularised incomplete Beta function (the CDF of ``Beta(k, n − k + 1)`` at ``p``),
    which is continuous and strictly increasing in ``p``; so ``p_lower(k)`` is the unique
    ``q`` with ``P_q(K ≥ k) = alpha``, and ``p_lower(k) > p ⟺ P_p(K ≥ k) < alpha``. The
    tail ``P_p(K ≥ k)`` decreases in ``k``; with ``k*`` the smallest ``k`` where it is
    below ``alpha``, ``{p_lower(K) > p} = {K ≥ k*}``, whose probability is
    ``P_p(K ≥ k*) < alpha``. Hence ``P(p_lower(K) ≤ p) ≥ 1 − alpha`` for every ``p``.
    For ``k = n``: ``I_q(n, 1) = qⁿ = alpha``.

    ``k`` (int or tensor) and ``n`` broadcast; returns float64 of their shape.
    """
    k_arr = np.asarray(torch.as_tensor(k).cpu().numpy() if torch.is_tensor(k) else k, dtype=np.float64)
    n_arr = np.asarray(torch.as_tensor(n).cpu().numpy() if torch.is_tensor(n) else n, dtype=np.float64)
    k_arr, n_arr = np.broadcast_arrays(k_arr, n_arr)
    if np.any(k_arr < 0) or np.any(k_arr > n_arr) or np.any(n_arr < 1):
        raise ValueError(f"clopper_pearson_lower needs 0 ≤ k ≤ n and n ≥ 1; got k={k!r}, n={n!r}")
    safe_k = np.maximum(k_arr, 1.0)
    lower = np.where(k_arr > 0, stats.beta.ppf(alpha, safe_k, n_arr - safe_k + 1), 0.0)
    device = k.device if torch.is_tensor(k) else None
    return torch.as_tensor(lower, dtype=torch.float64, device=device)


def smoothed_radius(p_lower, sigma: float) -> torch.Tensor:
    """Certified ℓ2 radius of the smoothed decision: ``σ·Φ⁻¹(p_lower)`` where ``p_lower > ½``, else 0.

    Theorem (Cohen et al. 2019, Thm. 1 with ``p_B = 1 − p_A``). If
    ``P(h(u + N) = c_A) ≥ p_lower > ½`` then ``g(u + δ) = c_A`` for every
    ``‖δ‖₂ < R = σ·Φ⁻¹(p_lower)``.

    Proof. For any set ``S``, ``u ↦ σ·Φ⁻¹(P(u + N ∈ S))`` is 1-Lipschitz (Salman et al.
    NeurIPS 2019; equivalently the Neyman–Pearson argument of Cohen et al., whose
    worst case is a half-space). With ``S = {h = c_A}``,
    ``P(h(u + δ + N) = c_A) ≥ Φ(Φ⁻¹(p_lower) − ‖δ‖/σ) > Φ(0) = ½`` for ``‖δ‖ < R``:
    ``c_A`` holds more than half the probability, so it is the strict argmax among
    the three outcomes and ``g(u + δ) = c_A``. ``p_lower ≤ ½`` certifies nothing (0).
    ``p_lower = 1`` (impossible for a Clopper–Pearson bound) would give ``inf``.
    """
    p = _f64(p_lower, p_lower if torch.is_tensor(p_lower) else None)
    z = torch.as_tensor(stats.norm.ppf(p.cpu().numpy()), dtype=torch.float64, device=p.device)
    return torch.where(p > 0.5, float(sigma) * z, torch.zeros_like(z))


def per_image_radius(joint_radius, images: int) -> torch.Tensor:
    """Per-image ℓ2 radius implied by a radius ``R`` on the concatenation of ``images`` images: ``R/√images``.

    Threat ``all`` adds noise to ``(ref, x0, x1)`` jointly, so ``R`` bounds the norm of
    the concatenated perturbation ``‖(δ_ref, δ0, δ1)‖₂ = √(‖δ_ref‖² + ‖δ0‖² + ‖δ1‖²)``.
    If every image moves by at most ``ε`` the joint norm is at most ``√3·ε``, so each
    image is covered up to ``ε < R/√3``; no larger per-image radius follows from ``R``
    alone, since all three at ``ε`` give exactly ``√3·ε``. For threat ``ref``
    (``images = 1``) the radius is unchanged.
    """
    r = _f64(joint_radius, joint_radius if torch.is_tensor(joint_radius) else None)
    return r / math.sqrt(int(images))


def certify_counts(top: torch.Tensor, k: torch.Tensor, n: int, alpha: float, sigma: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CERTIFY's last step: ``(decision, p_lower, radius)`` from the guess ``top`` and its count ``k`` of ``n``.

    ``p_lower = clopper_pearson_lower(k, n, alpha)``; the decision is ``top`` when
    ``p_lower > ½`` and ``ABSTAIN`` otherwise; the radius is
    :func:`smoothed_radius` (0 when abstaining). Guarantee (Cohen et al., Prop. 2):
    since ``top`` depends only on the selection samples, with probability at least
    ``1 − alpha`` over the ``n`` estimation samples a non-abstained decision is ``g``'s
    and holds within the radius.
    """
    p_lower = clopper_pearson_lower(k, n, alpha)
    certified = p_lower > 0.5
    decision = torch.where(certified, top.to(torch.int64), torch.full_like(top, ABSTAIN, dtype=torch.int64))
    return decision, p_lower, smoothed_radius(p_lower, sigma)


def decision_score(decision: torch.Tensor, judge: torch.Tensor) -> torch.Tensor:
    """2AFC score of a smoothed decision: ``1 − j`` for ``X0``, ``j`` for ``X1``, ``min(j, 1 − j)`` for ``ABSTAIN``.

    An abstention scores what the adversary can force at best (DESIGN.md), not ½:
    a smoothed metric that refuses to answer gets no credit for it.
    """
    j = judge.to(torch.float64)
    d = decision.to(j.device)
    return torch.where(d == X0, 1 - j, torch.where(d == X1, j, worst_score(j)))


def smoothed_certified_score(decision: torch.Tensor, radius: torch.Tensor, judge: torch.Tensor,
                             eps: float) -> torch.Tensor:
    """Certified score at ``eps``: :func:`decision_score` where ``radius > eps``, else ``min(j, 1 − j)``.

    ``radius`` is per image (:func:`per_image_radius` for threat ``all``). Abstentions
    have radius 0 and score ``min(j, 1 − j)`` at every budget, as in
    :func:`suite.scoring.certified_score`.
    """
    return certified_score(decision_score(decision, judge), radius, judge, eps)


# --------------------------------------------------------------------------- center smoothing


def hoeffding_slack(n: int, alpha: float) -> float:
    """``t = √(ln(1/alpha) / (2n))``: a mean of ``n`` i.i.d. ``[0, 1]`` draws exceeds (or falls below)
    its expectation by ``t`` or more with probability at most ``exp(−2nt²) = alpha`` (Hoeffding)."""
    return math.sqrt(math.log(1 / alpha) / (2 * n))


def lower_median(distances: torch.Tensor) -> torch.Tensor:
    """The ``⌈n/2⌉``-th smallest of the ``n`` values in each row of ``distances`` (``(m, n) → (m,)``)."""
    n = distances.shape[-1]
    return distances.kthvalue((n + 1) // 2, dim=-1).values


def meb_center(distances: torch.Tensor) -> tuple[int, float]:
    """The β-MEB with β = 2: the candidate whose lower median distance to the samples is smallest.

    ``distances[i, j] = d(c_i, z_j)`` for candidates ``c_i`` and samples ``z_j`` (the
    candidates may be the samples themselves). Returns ``(i, r)`` with ``r`` that
    smallest lower median (:func:`lower_median`): at least ``⌈n/2⌉`` samples lie in
    the ball ``B(c_i, r)``.

    β = 2. If some ball ``B(c, R)`` holds at least ``⌈n/2⌉`` samples and a candidate
    ``c_i`` lies in it, every one of those samples is within ``d(c_i, c) + R ≤ 2R`` of
    ``c_i`` (triangle inequality), so ``c_i``'s lower median, hence ``r``, is at most
    ``2R``: ``r`` is within a factor 2 of the smallest such ball.
    """
    medians = lower_median(distances)
    i = int(torch.argmin(medians))
    return i, float(medians[i])


def center_check(inside: int, n: int, delta: float, alpha1: float) -> bool:
    """Center smoothing's acceptance test of a computed center ``(ẑ, r̂)``.

    ``inside`` of ``n`` fresh samples lie in ``B(ẑ, r̂)``. With
    ``Δ₁ = √(ln(2/α₁)/(2n))`` (:func:`hoeffding_slack` at ``α₁/2``) and
    ``p̂ = inside/n − Δ₁``, the center is accepted when ``Δ₁ ≤ Δ`` and ``½ − p̂ < Δ``.
    Then, with probability ``≥ 1 − α₁/2``, ``P(f(x + N) ∈ B(ẑ, r̂)) ≥ p̂ > ½ − Δ``.
    Kumar & Goldstein accept on ``max(Δ₁, ½ − p̂) ≤ Δ``; the strict ``<`` on the
    second term is what makes two balls of mass ``> ½ − Δ`` and ``≥ ½ + Δ`` meet
    (:func:`center_bound`).
    """
    delta1 = hoeffding_slack(n, alpha1 / 2)
    return delta1 <= delta and 0.5 - (inside / n - delta1) < delta


def center_quantile_level(eps: float, sigma: float, delta: float, n: int, alpha2: float) -> float:
    """``q = Φ(Φ⁻¹(½ + Δ) + ε/σ) + √(ln(1/α₂)/(2n))``: the empirical quantile of the
    distances to the center that bounds the radius ``R_p`` of mass ``p = q − slack`` (see
    :func:`order_statistic` and :func:`center_bound`). ``q > 1`` means no bound at this ε."""
    p = stats.norm.cdf(stats.norm.ppf(0.5 + delta) + eps / sigma)
    return float(p) + hoeffding_slack(n, alpha2)


def order_statistic(values: torch.Tensor, q: float) -> float:
    """The ``⌈q·n⌉``-th smallest of the ``n`` values (``inf`` when ``q > 1``).

    Upper confidence bound on the ``p``-quantile ``R_p = min{r : P(D ≤ r) ≥ p}`` for
    ``q = p + t``, ``t = hoeffding_slack(n, α₂)``: the number ``c`` of values below
    ``R_p`` is ``Bin(n, P(D < R_p))`` with ``P(D < R_p) ≤ p``, so by Hoeffding
    ``c < n(p + t) = nq`` with probability ``≥ 1 − α₂``; then ``c ≤ ⌈nq⌉ − 1`` and the
    ``⌈nq⌉``-th smallest value is ``≥ R_p``.
    """
    n = values.numel()
    rank = math.ceil(q * n - 1e-12)
    if rank > n:
        return math.inf
    return float(values.flatten().kthvalue(max(rank, 1)).values)


def center_bound(radius: float, beta: float = 2.0) -> float:
    """Center smoothing's bound ``d(f̂(x), f̂(x + δ)) ≤ (1 + β)·R̂`` for ``‖δ‖₂ ≤ ε`` (β = 2 gives ``3R̂``).

    Setting. ``f`` maps images to a space with a distance ``d`` that **satisfies the
    triangle inequality** (the factor ``1 + β`` comes from it twice). ``f̂(x) = ẑ`` is
    the accepted center at ``x`` (:func:`meb_center`, :func:`center_check`), and
    ``R̂ = order_statistic({d(ẑ, f(x + N_i))}, q)`` with ``q`` from
    :func:`center_quantile_level` and ``n`` fresh samples.

    Proof. Let ``p = q − t`` (:func:`order_statistic`); with probability ``≥ 1 − α₂``,
    ``R̂ ≥ R_p``, so ``B = B(ẑ, R̂)`` has ``P(f(x + N) ∈ B) ≥ p``. For ``x' = x + δ``,
    ``‖δ‖ ≤ ε``, the 1-Lipschitz property of ``σ·Φ⁻¹(P(· + N ∈ S))`` (see
    :func:`smoothed_radius`) with ``S = f⁻¹(B)`` gives
    ``P(f(x' + N) ∈ B) ≥ Φ(Φ⁻¹(p) − ε/σ) = ½ + Δ``. Run the same procedure at ``x'``:
    (a) its first ``n0`` samples put at least ``⌈n0/2⌉`` in ``B`` except with
    probability ``α₁/2`` (Hoeffding, since ``½ + Δ − Δ₁ ≥ ½``), and a candidate lies
    in ``B`` (always when the candidates are those samples; except with probability
    ``(½ − Δ)^m`` for ``m`` separate candidates), so its center has ``r̂' ≤ 2R̂``
    (:func:`meb_center`); (b) if accepted, ``B' = B(ẑ', r̂')`` has
    ``P(f(x' + N) ∈ B') > ½ − Δ`` except with probability ``α₁/2``
    (:func:`center_check`). Then ``P(f(x' + N) ∈ B ∩ B') > 0``: some ``y`` lies in both,
    and ``d(ẑ, ẑ') ≤ d(ẑ, y) + d(y, ẑ') ≤ R̂ + βR̂``. So, except with probability
    ``α₁ + α₂`` (``+ (½ − Δ)^m``), ``f̂(x')`` abstains or is within ``(1 + β)R̂`` of ``f̂(x)``.
    """
    return (1 + float(beta)) * float(radius)


def chordal_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``‖â − b̂‖₂`` row-wise (``â = a/‖a‖``, ``0 ↦ 0``): a pseudo-metric (Euclidean distance of the
    directions), so it satisfies the triangle inequality that :func:`center_bound` needs."""
    a, b = a.flatten(1).to(torch.float64), b.flatten(1).to(torch.float64)

    def unit(v):
        norm = v.norm(dim=1, keepdim=True)
        return torch.where(norm > 0, v / norm.clamp_min(1e-300), torch.zeros_like(v))

    return (unit(a) - unit(b)).norm(dim=1)


def cosine_from_chordal(chordal) -> torch.Tensor:
    """``1 − cos∠(a, b) = ‖â − b̂‖² / 2`` for non-zero ``a, b`` (capped at 2, its largest value).

    Proof: ``‖â − b̂‖² = ‖â‖² + ‖b̂‖² − 2⟨â, b̂⟩ = 2 − 2cos∠(a, b)``. The cosine distance
    itself violates the triangle inequality (``1 − cos`` of angles 0, θ, 2θ:
    ``1 − cos 2θ ≈ 4·(1 − cos θ)`` for small θ), so center smoothing works with the
    chordal distance and converts its bound with this increasing map.
    """
    c = _f64(chordal, chordal if torch.is_tensor(chordal) else None)
    return (c * c / 2).clamp(max=2.0)


__all__ = [
    "ABSTAIN", "IMAGES_PER_THREAT", "TIE", "X0", "X1",
    "base_outcome", "center_bound", "center_check", "center_quantile_level", "certify_counts",
    "chordal_distance", "clopper_pearson_lower", "cosine_from_chordal", "decision_score",
    "hoeffding_slack", "lower_median", "meb_center", "order_statistic", "outcome_counts",
    "per_image_radius", "select_class", "smoothed_certified_score", "smoothed_radius",
]
