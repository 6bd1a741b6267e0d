"""Threat-model geometry shared by every attack: norms, projection, random start, steepest ascent.

Pure functions on image batches ``(B, ...)``; every norm is taken per sample over all
remaining dimensions. ``norm`` is ``"l2"`` or ``"linf"``. The feasible set of an image
``c`` at budget ``ε`` is ``S(c) = {z : ‖z − c‖ ≤ ε} ∩ [0, 1]ⁿ``; a budget is one float for
the batch or a tensor ``(B,)`` of per-sample budgets.

Per-sample random streams (:func:`sample_generators`): each sample draws from its own
generator, seeded from the attack's seed and the sample's id, so a sample's random
start does not depend on which other samples share its batch, on their order, or on
which of them an attack has already dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from suite.errors import SuiteError
from suite.types import NORMS


#: cap on the active-set steps of the ℓ2 projection (each step saturates at least one more
#: coordinate; a handful are needed in practice, and any iterate is feasible)
_MAX_ACTIVE_SET_STEPS = 100


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise SuiteError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
    return norm


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample ``‖δ‖₂ = (Σ δᵢ²)^½`` or ``‖δ‖∞ = maxᵢ |δᵢ|``, shape ``(B,)``."""
    flat = delta.flatten(1)
    if check_norm(norm) == "l2":
        return flat.norm(dim=1)
    return flat.abs().amax(dim=1)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def _scale(eps: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """A budget ready to multiply ``like``: a float as is, a ``(B,)`` tensor as ``(B, 1, …)`` of its dtype."""
    if torch.is_tensor(eps):
        return _per_sample(eps.to(device=like.device, dtype=like.dtype), like)
    return eps


def sample_seed(seed: int, sample_id: str) -> int:
    """The 64-bit seed of one sample's random stream: the first 8 bytes (little-endian) of
    ``sha256(f"{seed}:{sample_id}")``. The seed is an integer, so the first ``:`` separates the two."""
    digest = hashlib.sha256(f"{int(seed)}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def sample_generators(seed: int, sample_ids: Sequence[str]) -> list[torch.Generator]:
    """One CPU generator per sample, seeded with :func:`sample_seed`.

    CPU generators make the draws the same on every device (:func:`random_start` moves
    them to the images' device).
    """
    return [torch.Generator().manual_seed(sample_seed(seed, sid)) for sid in sample_ids]


def project(z: torch.Tensor, center: torch.Tensor, eps: float | torch.Tensor, norm: str) -> torch.Tensor:
    """Euclidean projection of ``z`` onto ``S(center)``, the ε-ball intersected with the ``[0, 1]`` box.

    ``eps``: one budget, or a ``(B,)`` tensor of per-sample budgets.

    ``linf``: both sets are boxes, so the projection is the coordinate-wise clip
    ``clamp(clamp(z, c − ε, c + ε), 0, 1)``.

    ``l2``: minimising ``‖p − z‖²`` subject to ``‖p − c‖² ≤ ε²`` and ``0 ≤ p ≤ 1`` with a
    multiplier ``λ ≥ 0`` for the ball separates over coordinates; each coordinate
    minimises ``(p − z)² + λ(p − c)²`` on ``[0, 1]``, so
    ``p(t) = clamp(c + t(z − c), 0, 1)`` with ``t = 1/(1 + λ) ∈ (0, 1]``. Slater's
    condition holds (``c`` lies in the box), so ``p(t*)`` is the projection for the KKT
    value: ``t* = 1`` if ``clamp(z, 0, 1)`` is in the ball, else the ``t`` with
    ``f(t) = ‖p(t) − c‖² = ε²``. With ``d = z − c``, ``a_i = |d_i|`` and ``r_i`` the room
    from ``c_i`` to the box face ``d_i`` points at, ``f(t) = Σ min(t·a_i, r_i)²``:
    coordinate ``i`` grows as ``t²a_i²`` until it saturates at ``r_i²``. The active-set
    iteration ``t ← min(1, √((ε² − C(t)) / A(t)))``, where ``C`` sums ``r_i²`` over the
    saturated coordinates and ``A`` sums ``a_i²`` over the others, starts at ``t = 0``
    (its first step is the plain rescaling ``ε/‖d‖``), never overshoots ``t*``
    (saturated terms stay saturated and the others are at most ``t²a_i²``, so
    ``f(t_next) ≤ ε²``), and stops, exactly at ``t*``, once the saturated set stops
    growing. (The usual "rescale onto the ball, then clip" of PGD codes is its first
    step: feasible, but not the nearest point once the box binds.)
    """
    if check_norm(norm) == "linf":
        e = _scale(eps, z)
        return torch.minimum(torch.maximum(z, center - e), center + e).clamp(0.0, 1.0)
    d = z - center
    a = d.abs()
    room = torch.where(d > 0, 1.0 - center, center)
    # coordinate i saturates once t ≥ tau_i; a zero coordinate never moves
    tau = torch.where(a > 0, room / a, torch.inf).flatten(1)
    # (r², a²) per coordinate, summed in float64: float32 sums let the result overshoot ε by ~10⁻⁶
    weights = torch.stack([room.flatten(1), a.flatten(1)], dim=1).double().pow(2)
    a_total = weights[:, 1].sum(1)
    eps_sq = eps.to(device=d.device, dtype=torch.float64) ** 2 if torch.is_tensor(eps) else float(eps) ** 2
    t = torch.zeros(d.shape[0], dtype=torch.float64, device=d.device)
    for _ in range(_MAX_ACTIVE_SET_STEPS):
        saturated = (tau <= t.to(tau.dtype).unsqueeze(1)).to(weights.dtype).unsqueeze(2)
        c_sum, a_saturated = torch.bmm(weights, saturated).squeeze(2).unbind(1)
        a_sum = (a_total - a_saturated).clamp_min(0.0)
        grow = ((eps_sq - c_sum).clamp_min(0.0) / a_sum.clamp_min(1e-300)).sqrt()
        t_next = torch.where(a_sum > 0, grow, torch.ones_like(t)).clamp(max=1.0)
        if not bool((t_next > t).any()):
            break
        t = torch.maximum(t, t_next)
    return (center + _per_sample(t.to(d.dtype), d) * d).clamp(0.0, 1.0)


def random_start(center: torch.Tensor, eps: float | torch.Tensor, norm: str,
                 generator: torch.Generator | Sequence[torch.Generator]) -> torch.Tensor:
    """A random point of ``S(center)``: uniform in the ε-ball, then projected onto the box.

    ``linf``: ``δ ~ U[−ε, ε]ⁿ``. ``l2``: ``δ = ε · u^{1/n} · g / ‖g‖₂`` with ``g ~ N(0, I)``
    and ``u ~ U[0, 1]`` (uniform in the ball: the radius has density ``∝ rⁿ⁻¹``).
    Clipping to the box only moves coordinates towards ``c``, so the result stays in
    the ball.

    ``generator``: one generator for the whole batch, or a sequence of ``B`` generators
    (:func:`sample_generators`), one per row: row ``i`` is then drawn from the ``i``-th
    alone, on that generator's device, so it does not depend on the other rows.
    ``eps``: one budget, or a ``(B,)`` tensor of per-sample budgets.
    """
    if isinstance(generator, torch.Generator):
        delta = _ball_draw(center.shape, eps, norm, generator, center.dtype)
        return (center + delta.to(center.device)).clamp(0.0, 1.0)
    generators = list(generator)
    if len(generators) != center.shape[0]:
        raise SuiteError(f"random_start: expected one generator per sample ({center.shape[0]}); "
                         f"got {len(generators)}")
    budgets = eps.cpu() if torch.is_tensor(eps) else None
    rows = [_ball_draw((1, *center.shape[1:]), eps if budgets is None else budgets[i:i + 1], norm, gen, center.dtype)
            for i, gen in enumerate(generators)]
    delta = torch.cat(rows).to(center.device) if rows else torch.zeros_like(center)
    return (center + delta).clamp(0.0, 1.0)


def _ball_draw(shape, eps: float | torch.Tensor, norm: str, generator: torch.Generator,
               dtype: torch.dtype) -> torch.Tensor:
    """``δ`` uniform in the ε-ball of ``norm`` (see :func:`random_start`), drawn on the generator's device."""
    dev = generator.device
    if check_norm(norm) == "linf":
        unit = 2 * torch.rand(shape, generator=generator, device=dev, dtype=dtype) - 1
        return unit * _scale(eps, unit)
    g = torch.randn(shape, generator=generator, device=dev, dtype=dtype)
    n = g[0].numel()
    u = torch.rand(shape[0], generator=generator, device=dev, dtype=dtype)
    e = eps.to(device=dev, dtype=dtype) if torch.is_tensor(eps) else eps
    radius = e * u.pow(1.0 / n)
    return g * _per_sample(radius / lp_norm(g, "l2").clamp_min(1e-12), g)


def steepest_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit-norm direction of steepest ascent of a linear function with gradient ``g``.

    ``argmax_{‖v‖ ≤ 1} ⟨g, v⟩`` is ``sign(g)`` for ``linf`` and ``g / ‖g‖₂`` for ``l2``
    (a zero gradient gives the zero direction).
    """
    if check_norm(norm) == "linf":
        return grad.sign()
    n = lp_norm(grad, "l2")
    return grad / _per_sample(torch.where(n > 0, n, torch.ones_like(n)), grad)


def normalize_l1(grad: torch.Tensor) -> torch.Tensor:
    """``g / ‖g‖₁`` per sample (zero stays zero): the gradient scaling of MI-FGSM."""
    n = grad.flatten(1).abs().sum(1)
    return grad / _per_sample(torch.where(n > 0, n, torch.ones_like(n)), grad)


__all__ = ["NORMS", "check_norm", "lp_norm", "project", "random_start", "sample_generators", "sample_seed",
           "steepest_direction", "normalize_l1"]
