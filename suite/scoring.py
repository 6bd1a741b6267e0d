"""2AFC, robust and certified scores as pure functions (DESIGN.md, "2AFC score").

All functions work per sample on tensors of shape ``(B,)`` and return ``(B,)``.
"""

from __future__ import annotations

import torch


def twoafc_score(d0: torch.Tensor, d1: torch.Tensor, judge: torch.Tensor) -> torch.Tensor:
    """Per-sample 2AFC score.

    ``s = 1[d0<d1]·(1−j) + 1[d1<d0]·j + ½·1[d0=d1]`` where ``j`` is the fraction of
    people who judged ``x1`` closer to the reference. Exact ties score ½ whatever
    ``j`` is (the metric expresses no preference). A robust score is the same
    function evaluated on attacked images.
    """
    j = judge.to(torch.float64)
    d0 = d0.to(torch.float64)
    d1 = d1.to(torch.float64)
    return torch.where(d0 < d1, 1 - j, torch.where(d1 < d0, j, torch.full_like(j, 0.5)))


def oriented(d0: torch.Tensor, d1: torch.Tensor, lower_is_better: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The two values as distances (lower = closer): unchanged, or negated for a similarity.

    A metric that declares ``lower_is_better = False`` (a similarity such as raw SSIM)
    prefers the candidate with the *higher* value; negating both turns that into the
    lower-is-closer convention every score and margin here assumes.
    """
    return (d0, d1) if lower_is_better else (-d0, -d1)


def worst_score(judge: torch.Tensor) -> torch.Tensor:
    """The lowest score an adversary can force: ``min(j, 1−j)``."""
    j = judge.to(torch.float64)
    return torch.minimum(j, 1 - j)


def certified_score(natural: torch.Tensor, radius: torch.Tensor, judge: torch.Tensor, eps: float) -> torch.Tensor:
    """Certified 2AFC score at budget ``eps``.

    ``natural`` where ``radius > eps`` (the decision provably cannot change within the
    ε-ball), otherwise ``min(j, 1−j)``. A sample on the boundary (``radius == eps``)
    is not certified: the adversary may reach the decision boundary itself.
    """
    safe = radius.to(torch.float64) > float(eps)
    return torch.where(safe, natural.to(torch.float64), worst_score(judge))


def target_label(judge: torch.Tensor) -> torch.Tensor:
    """The option most people chose, as ``+1`` (x1) / ``−1`` (x0) / ``0`` (``j = ½``: nothing to gain)."""
    j = judge.to(torch.float64)
    return torch.sign(j - 0.5)


def adversarial_margin(d0: torch.Tensor, d1: torch.Tensor, judge: torch.Tensor) -> torch.Tensor:
    """The quantity an attack maximises: ``y·(d1 − d0)`` with ``y = sign(j − ½)``.

    It is positive exactly when the metric prefers the option fewer people chose
    (for ``j > ½`` people preferred x1, so the adversary wants ``d1 > d0``).
    For ``j = ½`` it is 0: every decision scores ½ and the adversary gains nothing.
    """
    y = target_label(judge).to(d0.dtype)
    return y * (d1 - d0)
