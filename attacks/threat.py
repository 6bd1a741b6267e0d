"""Threat-model geometry shared by every attack: norms, projection, random start, steepest ascent.

Pure functions on image batches ``(B, ...)``; every norm is taken per sample over all
remaining dimensions. ``norm`` is ``"l2"`` or ``"linf"``. The feasible set of an image
``c`` at budget ``ε`` is ``S(c) = {z : ‖z − c‖ ≤ ε} ∩ [0, 1]ⁿ``.
"""

from __future__ import annotations

import torch

from suite.errors import SuiteError

NORMS = ("l2", "linf")

#: bisection steps of the ℓ2 projection: the step along ``z − c`` is found to 2⁻⁴⁰ of its length
_BISECTION_STEPS = 40


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


def project(z: torch.Tensor, center: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Euclidean projection of ``z`` onto ``S(center)``, the ε-ball intersected with the ``[0, 1]`` box.

    ``linf``: both sets are boxes, so the projection is the coordinate-wise clip
    ``clamp(clamp(z, c − ε, c + ε), 0, 1)``.

    ``l2``: minimising ``‖p − z‖²`` subject to ``‖p − c‖² ≤ ε²`` and ``0 ≤ p ≤ 1`` with a
    multiplier ``λ ≥ 0`` for the ball separates over coordinates; each coordinate
    minimises ``(p − z)² + λ(p − c)²`` on ``[0, 1]``, so
    ``p(t) = clamp(c + t(z − c), 0, 1)`` with ``t = 1/(1 + λ) ∈ (0, 1]``. Slater's
    condition holds (``c`` lies in the box and ε > 0), so ``p(t*)`` is the projection
    for the KKT value: ``t* = 1`` if ``clamp(z, 0, 1)`` is in the ball, otherwise the
    ``t`` with ``‖p(t) − c‖ = ε``. Every coordinate ``|p_i(t) − c_i|`` is non-decreasing
    in ``t`` (``c_i ∈ [0, 1]``), so ``t*`` is found by bisection; the lower end is kept,
    so the result is always feasible. (The usual "scale onto the ball, then clip" of
    PGD codes is feasible too, but not the nearest point once the box binds.)
    """
    if check_norm(norm) == "linf":
        return torch.minimum(torch.maximum(z, center - eps), center + eps).clamp(0.0, 1.0)
    d = z - center
    # distance travelled along d before coordinate i hits the box: |p_i(t) − c_i| = min(t |d_i|, room_i)
    room = torch.where(d > 0, 1.0 - center, center)
    ad = d.abs()

    def dist_sq(t: torch.Tensor) -> torch.Tensor:
        return torch.minimum(_per_sample(t, d) * ad, room).pow(2).flatten(1).sum(1)

    eps_sq = float(eps) ** 2
    ones = torch.ones(d.shape[0], dtype=d.dtype, device=d.device)
    inside = dist_sq(ones) <= eps_sq
    lo, hi = torch.zeros_like(ones), ones.clone()
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        ok = dist_sq(mid) <= eps_sq
        lo = torch.where(ok, mid, lo)
        hi = torch.where(ok, hi, mid)
    t = torch.where(inside, ones, lo)
    return (center + _per_sample(t, d) * d).clamp(0.0, 1.0)


def random_start(center: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A random point of ``S(center)``: uniform in the ε-ball, then projected onto the box.

    ``linf``: ``δ ~ U[−ε, ε]ⁿ``. ``l2``: ``δ = ε · u^{1/n} · g / ‖g‖₂`` with ``g ~ N(0, I)``
    and ``u ~ U[0, 1]`` (uniform in the ball: the radius has density ``∝ rⁿ⁻¹``).
    Clipping to the box only moves coordinates towards ``c``, so the result stays in
    the ball.
    """
    shape, dev, dt = center.shape, center.device, center.dtype
    if check_norm(norm) == "linf":
        delta = (2 * torch.rand(shape, generator=generator, device=dev, dtype=dt) - 1) * eps
    else:
        g = torch.randn(shape, generator=generator, device=dev, dtype=dt)
        n = g[0].numel()
        u = torch.rand(shape[0], generator=generator, device=dev, dtype=dt)
        radius = eps * u.pow(1.0 / n)
        delta = g * _per_sample(radius / lp_norm(g, "l2").clamp_min(1e-12), g)
    return (center + delta).clamp(0.0, 1.0)


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


__all__ = ["NORMS", "check_norm", "lp_norm", "project", "random_start", "steepest_direction", "normalize_l1"]
