"""Certificates of a Lipschitz embedding under cosine distance (DESIGN.md, "Certification").

Setting. ``f`` maps images to ``ℝᴰ`` and is ``L``-Lipschitz in ℓ2 (LipSim: ``L = 1``,
times the norm of the resize in front of the network). The metric is
``d(x, y) = 1 − cos∠(f(x), f(y))``. A 2AFC triplet ``(ref, x0, x1)`` is decided by
the sign of ``d1 − d0``; ``d0 = d1`` is a tie. All functions take the clean
embeddings ``f(ref), f(x0), f(x1)`` of shape ``(B, D)`` and return ``(B,)`` float64;
they are pure and compute in float64.

Two facts carry every proof below.

(F1) If ``‖δ‖₂ ≤ ε`` then ``‖f(x + δ) − f(x)‖₂ ≤ Lε =: ρ``.

(F2) Turn of a moved vector. If ``‖v' − v‖ ≤ ρ < ‖v‖`` then ``∠(v, v') ≤ arcsin(ρ/‖v‖)``.
Proof: let ``φ = ∠(v, v')``. The distance from the point ``v`` to the ray ``ℝ₊v'`` is
``‖v‖ sin φ`` when ``φ ≤ π/2`` and ``‖v‖`` when ``φ > π/2``; it is at most
``‖v − v'‖ ≤ ρ < ‖v‖``, so ``φ ≤ π/2`` and ``sin φ ≤ ρ/‖v‖``. When ``ρ ≥ ‖v‖`` the ball
around ``v`` contains the origin's closure and any direction (or none) is reachable;
we then take the turn to be ``π``, which certifies nothing.

``eta`` (all functions) is an allowance for the difference between the embeddings
as computed (floating point) and the exact Lipschitz map: each computed embedding
is assumed within ``eta`` of the exact one, so a perturbed embedding is within
``ρ + 2·eta`` of the clean computed one. ``eta = 0`` gives the exact-arithmetic results.
"""

from __future__ import annotations

import math

import torch

from suite.errors import SuiteError
from suite.retrieval import match_mask


def _f64(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().flatten(1).to(torch.float64) for t in tensors]


def _per_sample(value, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64, device=like.device).expand(like.shape[0]).clone()


def unit(v: torch.Tensor) -> torch.Tensor:
    """``v / ‖v‖`` row-wise, with ``0 ↦ 0``."""
    n = v.norm(dim=1, keepdim=True)
    return torch.where(n > 0, v / n.clamp_min(1e-300), torch.zeros_like(v))


def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle ``∠(a, b) ∈ [0, π]`` row-wise, ``2·atan2(‖â − b̂‖, ‖â + b̂‖)`` (accurate near 0 and π)."""
    ua, ub = unit(a), unit(b)
    return 2 * torch.atan2((ua - ub).norm(dim=1), (ua + ub).norm(dim=1))


def turn_bound(norm: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """Largest turn of a vector of norm ``norm`` moved by at most ``rho`` (F2): ``arcsin(ρ/‖v‖)``, or π if ``ρ ≥ ‖v‖``."""
    ratio = rho / norm.clamp_min(1e-300)
    return torch.where((rho < norm) & (norm > 0), torch.asin(ratio.clamp(max=1.0)), torch.full_like(ratio, math.pi))


def decision(f_ref: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
    """``sign(d1 − d0) = sign(⟨f(ref), ê0 − ê1⟩)``: ``+1`` when x0 is closer, ``−1`` when x1 is, 0 for a tie."""
    r, a, b = _f64(f_ref, f0, f1)
    return torch.sign((unit(r) * (unit(a) - unit(b))).sum(1))


def ref_radius(f_ref, f0, f1, lipschitz: float = 1.0, eta=0.0) -> torch.Tensor:
    """Exact certified ℓ2 radius when only the reference is perturbed (threat ``ref``).

    ``R = (|⟨f(ref), u⟩| / ‖u‖ − 2·eta) / L`` with ``u = ê1 − ê0``, clipped at 0.

    Proof. ``d1 − d0 = cos∠(r, e0) − cos∠(r, e1) = ⟨r̂, ê0 − ê1⟩``, whose sign for
    ``r ≠ 0`` is that of ``⟨r, u⟩`` (up to the sign convention): the decision only
    depends on which side of the hyperplane ``H = {z : ⟨z, u⟩ = 0}`` through the
    origin ``f(ref)`` lies. Its distance to ``H`` is ``m = |⟨f(ref), u⟩| / ‖u‖``. By
    (F1) the perturbed embedding stays within ``Lε + 2·eta`` of the computed one,
    hence strictly on the same side of ``H`` whenever ``Lε + 2·eta < m``, i.e.
    ``ε < R``; and it cannot reach the origin (which lies on ``H``), so its
    direction stays defined. Exactness: for ``eta = 0`` the point ``f(ref) − m·û``
    on ``H`` is at distance ``m``, so no larger radius holds for every
    ``L``-Lipschitz ``f`` (it is attained when ``f`` moves along ``−û``). Ties
    (``⟨f(ref), u⟩ = 0``) and ``ê0 = ê1`` give 0.
    """
    r, a, b = _f64(f_ref, f0, f1)
    u = unit(b) - unit(a)
    un = u.norm(dim=1)
    margin = (r * u).sum(1).abs() / un.clamp_min(1e-300)
    radius = (margin - 2 * _per_sample(eta, r)) / float(lipschitz)
    return torch.where(un > 0, radius.clamp_min(0), torch.zeros_like(radius))


def lipsim_repo_radius(f_ref, f0, f1) -> torch.Tensor:
    """The LipSim reference code's radius ``|⟨ê(ref), ê1 − ê0⟩| / ‖ê1 − ê0‖`` — for comparison only.

    It is :func:`ref_radius` with ``f(ref)`` replaced by its direction, i.e. it assumes
    ``‖f(ref)‖ = 1``: when ``‖f(ref)‖ < 1`` it over-claims by the factor
    ``1/‖f(ref)‖`` (unsound), when ``‖f(ref)‖ > 1`` it is needlessly small.
    """
    r, a, b = _f64(f_ref, f0, f1)
    return ref_radius(unit(r), a, b)


def _all_condition(norms: tuple, gap: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    n_ref, n0, n1 = norms
    return 2 * turn_bound(n_ref, rho) + turn_bound(n0, rho) + turn_bound(n1, rho) < gap


def all_radius(f_ref, f0, f1, lipschitz: float = 1.0, eta=0.0, iters: int = 64) -> torch.Tensor:
    """Certified ℓ2 radius when the reference and both candidates are perturbed (threat ``all``).

    Let ``θ_k = ∠(f(ref), f(x_k))`` and ``gap = |θ1 − θ0|``. With every image moved by
    at most ε, every embedding moves by at most ``ρ = Lε + 2·eta`` (F1), and turns by at
    most ``α_v = turn_bound(‖f(v)‖, ρ)`` (F2). The decision cannot change while

        2·α_ref + α_0 + α_1 < gap.                                        (C)

    Proof. Angles between directions are a metric on the sphere (triangle
    inequality), so for the perturbed embeddings ``θ0' ≤ α_ref + θ0 + α_0`` and
    ``θ1' ≥ θ1 − α_ref − α_1``. Say ``θ0 < θ1`` (x0 is closer); then
    ``θ1' − θ0' ≥ gap − (2α_ref + α_0 + α_1) > 0`` under (C), and since cos is strictly
    decreasing on ``[0, π]``, ``d0' < d1'``: the same decision. The case ``θ1 < θ0`` is
    symmetric. Since ``gap ≤ π``, (C) can only hold when every turn is below π, i.e.
    ``ρ < ‖f(v)‖`` for all three, so no perturbed embedding can vanish. A tie
    (``gap = 0``) is never certified.

    The left side of (C) is non-decreasing in ε, so the certified budgets form an
    interval ``[0, ε*)``. Bisection keeps ``lo`` with (C) true at ``lo``; the returned
    ``lo ≤ ε*`` is sound: for ``ε < lo`` (C) holds by monotonicity (``certified_score``
    requires ``radius > ε``). ``iters`` halvings of ``[0, min‖f‖/L]`` bound the loss.
    """
    r, a, b = _f64(f_ref, f0, f1)
    norms = (r.norm(dim=1), a.norm(dim=1), b.norm(dim=1))
    gap = (angle(r, b) - angle(r, a)).abs()
    eta = _per_sample(eta, r)
    lip = float(lipschitz)
    lo = torch.zeros_like(gap)
    ok = _all_condition(norms, gap, 2 * eta)
    hi = torch.minimum(torch.minimum(norms[0], norms[1]), norms[2]) / lip
    for _ in range(iters):
        mid = (lo + hi) / 2
        good = _all_condition(norms, gap, lip * mid + 2 * eta)
        lo = torch.where(good, mid, lo)
        hi = torch.where(good, hi, mid)
    return torch.where(ok, lo, torch.zeros_like(lo))


def distance_bound(f_x, eps: float, lipschitz: float = 1.0, eta=0.0) -> torch.Tensor:
    """Upper bound on ``d(x, x + δ)`` over ``‖δ‖₂ ≤ eps``: ``1 − √(1 − (ρ/‖f(x)‖)²)``, or 2 if ``ρ ≥ ‖f(x)‖``.

    Here ``ρ = L·eps + 2·eta``. Proof: by (F1) and (F2) the angle ``φ`` between
    ``f(x)`` and ``f(x + δ)`` is at most ``arcsin(ρ/‖f(x)‖) ≤ π/2``, and
    ``d = 1 − cos φ`` is increasing in ``φ`` on ``[0, π]``, so
    ``d ≤ 1 − cos(arcsin(ρ/‖f(x)‖)) = 1 − √(1 − (ρ/‖f(x)‖)²)``. When ``ρ ≥ ‖f(x)‖``
    only the trivial bound ``1 − cos φ ≤ 2`` holds. Tight for ``eta = 0``: moving
    ``f(x)`` orthogonally to the tangent point reaches it.
    """
    (v,) = _f64(f_x)
    n = v.norm(dim=1)
    rho = float(lipschitz) * float(eps) + 2 * _per_sample(eta, v)
    ratio = rho / n.clamp_min(1e-300)
    bound = 1 - torch.sqrt((1 - ratio.clamp(max=1.0) ** 2).clamp_min(0))
    return torch.where((rho < n) & (n > 0), bound, torch.full_like(bound, 2.0))


#: below this squared gap ``‖ĝ* − ĝ_k‖²`` the Gram expansion loses digits; such pairs are recomputed directly
_NEAR_DUPLICATE_SQ = 1e-6


def match_radius(f_query, f_gallery, matches, lipschitz: float = 1.0, eta=0.0) -> torch.Tensor:
    """Certified ℓ2 radius of a query's *correct* rank-1 match (copy detection), only the query moving.

    Setting. ``f(q)`` ``(B, D)`` are the queries' embeddings, ``g_k = f_gallery[k]``
    ``(G, D)`` the gallery's (fixed: only the query is perturbed), ``d_k = 1 − cos∠(f(q), g_k)``
    and ``M`` the query's true originals (``matches``: index tuples, or a ``(B, G)`` bool
    mask). The query is *correct* when some true original is strictly nearer than every
    non-match (:func:`suite.retrieval.top1`; a tie is a miss). Let
    ``g* = argmin_{m ∈ M} d_m`` be the nearest true original, ``u_k = ĝ* − ĝ_k`` for each
    non-match ``k ∉ M``. Then

        R = (min_{k ∉ M} ⟨f(q), u_k⟩ / ‖u_k‖ − 2·eta) / L,   clipped at 0,

    ``R = 0`` when the query has no true original or its rank-1 item is not one (some
    ``⟨f(q), u_k⟩ ≤ 0``: nothing to certify) and ``R = +inf`` when every gallery item is a
    true original (the answer cannot be wrong). A non-match with the direction of ``g*``
    (``u_k = 0``) is a tie for ever: ``R = 0``.

    Proof. For one non-match ``k`` this is the 2AFC situation of :func:`ref_radius` with
    candidates ``g*`` and ``g_k``: ``d_k − d* = ⟨f(q)/‖f(q)‖, ĝ* − ĝ_k⟩``, whose sign for
    ``f(q) ≠ 0`` is that of ``⟨f(q), u_k⟩``, so ``g*`` stays strictly nearer than ``g_k``
    exactly while the embedding stays strictly on the positive side of the hyperplane
    ``H_k = {z : ⟨z, u_k⟩ = 0}`` through the origin, at distance ``m_k = ⟨f(q), u_k⟩ / ‖u_k‖``
    from ``f(q)``. By (F1) a query moved by ``‖δ‖₂ ≤ ε`` has its embedding within
    ``ρ = Lε + 2·eta`` of the computed ``f(q)`` (the gallery is not perturbed, and its
    computed embeddings are the ones every decision uses). If ``ε < R`` then
    ``ρ < m_k`` for *every* non-match at once, so ``g*`` is strictly nearer than every
    non-match (and the embedding, strictly off each ``H_k``, is not the origin): the
    rank-1 item is ``g*`` or another true original, a correct answer. Exactness (one
    true original, ``eta = 0``): the correct set ``⋂_k {⟨z, u_k⟩ > 0}`` is an
    intersection of open half-spaces, and the distance from a point inside to the
    complement ``⋃_k {⟨z, u_k⟩ ≤ 0}`` is the smallest distance to one of them,
    ``min_k m_k``; the point ``f(q) − m_k·û_k`` of ``H_k`` is a tie, a miss. So no larger
    radius holds for every ``L``-Lipschitz ``f``.

    Several true originals. The correct set is then the union over ``m ∈ M`` of the
    cones where ``g_m`` beats every non-match; the radius above is the distance to the
    boundary of the cone of ``g*`` alone, which lies inside the union. It is sufficient
    (the argument above never needs the other originals) and possibly conservative: a
    perturbation that leaves ``g*``'s cone into another original's cone keeps the answer
    correct but is not counted. Any true original could be used; the nearest one is the
    natural choice (its cone contains ``f(q)`` whenever the answer is correct).

    Computation. ``⟨f(q), ĝ_k⟩`` for all ``k`` is one ``(B, D) @ (D, G)`` product ``P``;
    ``⟨f(q), u_k⟩ = P[b, *] − P[b, k]`` and
    ``‖u_k‖² = ‖ĝ*‖² + ‖ĝ_k‖² − 2⟨ĝ*, ĝ_k⟩`` (``= 2 − 2⟨ĝ*, ĝ_k⟩`` for non-zero
    vectors; a zero vector has ``ĝ = 0``, ``d = 1``, and the argument holds as is), one
    more ``(B, D) @ (D, G)`` product, all in float64. Where ``‖u_k‖² < 10⁻⁶`` the
    expansion would lose digits to cancellation, and those (rare) pairs are recomputed
    from ``u_k`` itself.
    """
    (q,) = _f64(f_query)
    (g,) = _f64(f_gallery)
    n_query, n_gallery = q.shape[0], g.shape[0]
    if torch.is_tensor(matches) and matches.dtype == torch.bool:
        mask = matches.to(q.device)
    else:
        mask = match_mask(matches, n_gallery, q.device)
    if mask.shape != (n_query, n_gallery):
        raise SuiteError(f"matches {tuple(mask.shape)} must be (queries, gallery) = ({n_query}, {n_gallery})")
    eta = _per_sample(eta, q)
    gh = unit(g)
    has_match = mask.any(1)
    has_other = (~mask).any(1)
    radius = torch.zeros(n_query, dtype=torch.float64, device=q.device)
    if n_query == 0 or n_gallery == 0:
        return radius
    proj = q @ gh.T  # ⟨f(q), ĝ_k⟩, (B, G)
    star = torch.where(mask, proj, torch.full_like(proj, -math.inf)).argmax(1)
    g_star = gh[star]  # (B, D)
    rows = torch.arange(n_query, device=q.device)
    num = proj[rows, star].unsqueeze(1) - proj  # ⟨f(q), ĝ* − ĝ_k⟩
    sq_norm = gh.pow(2).sum(1)
    gap_sq = (sq_norm[star].unsqueeze(1) + sq_norm.unsqueeze(0) - 2 * (g_star @ gh.T)).clamp_min(0)
    near = (gap_sq < _NEAR_DUPLICATE_SQ) & ~mask
    if bool(near.any()):
        b, k = near.nonzero(as_tuple=True)
        u = g_star[b] - gh[k]
        num[b, k] = (q[b] * u).sum(1)
        gap_sq[b, k] = u.pow(2).sum(1)
    gap = gap_sq.sqrt()
    margin = torch.where(gap > 0, num / gap.clamp_min(1e-300), torch.zeros_like(num))
    margin = torch.where(mask, torch.full_like(margin, math.inf), margin).amin(1)
    certified = (margin - 2 * eta) / float(lipschitz)
    radius = torch.where(has_match & has_other, certified.clamp_min(0), radius)
    return torch.where(has_match & ~has_other, torch.full_like(radius, math.inf), radius)


__all__ = [
    "angle",
    "unit",
    "turn_bound",
    "decision",
    "ref_radius",
    "lipsim_repo_radius",
    "all_radius",
    "distance_bound",
    "match_radius",
]
