"""Training objectives and the learning-rate schedule of LipSim, as pure functions.

Two stages (Ghazanfari et al., ICLR 2024):

* distillation: the 1-Lipschitz student ``f`` regresses the teacher's embedding
  ``T(x)`` of the plain image, from the plain and from a colour-jittered view
  (:func:`distillation_loss`);
* fine-tuning on 2AFC triplets: a hinge loss on the decision of the cosine
  distance between normalised embeddings (:func:`hinge_loss`).

No Ray, no files: ``jobs/train`` calls these inside its training loops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``d(a, b) = 1 − ⟨a/‖a‖, b/‖b‖⟩`` per row of ``(B, D)`` embeddings; returns ``(B,)``."""
    return 1 - (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1)


def twoafc_logit(e_ref: torch.Tensor, e0: torch.Tensor, e1: torch.Tensor) -> torch.Tensor:
    """``logit = d0 − d1`` with ``d_i = 1 − cos(e_ref, e_i)``.

    Positive when the metric finds ``x1`` closer to the reference than ``x0``.
    """
    return cosine_distance(e_ref, e0) - cosine_distance(e_ref, e1)


def hinge_targets(judge: torch.Tensor) -> torch.Tensor:
    """``y = +1`` if ``j > ½`` (most people chose ``x1``) else ``−1``; ``j = ½`` counts as ``−1``.

    This is ``2·round(j) − 1`` with ties rounded down, as the LipSim reference code does.
    """
    return torch.where(judge > 0.5, 1.0, -1.0)


def hinge_loss(logit: torch.Tensor, judge: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean hinge loss on the 2AFC decision: ``mean_b max(0, margin − y_b · logit_b)``.

    ``logit = d0 − d1`` (see :func:`twoafc_logit`) and ``y = hinge_targets(judge)``.
    The loss vanishes once every triplet is decided the human way by at least
    ``margin`` in cosine distance; the paper uses margins 0.2, 0.4 and 0.5.
    """
    if margin < 0:
        raise ValueError(f"hinge margin must be ≥ 0; got {margin}")
    y = hinge_targets(judge).to(logit.dtype)
    return torch.clamp(margin - y * logit, min=0).mean()


def rmse(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Root-mean-square error over all elements: ``√(mean((p − t)²) + eps)``.

    ``eps`` keeps the gradient finite at a perfect fit (``d√u/du`` is infinite at 0);
    at the default it moves the value by at most 1e-6.
    """
    return torch.sqrt((prediction - target).pow(2).mean() + eps)


def distillation_loss(student_plain: torch.Tensor, student_jittered: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``½ · (RMSE(f(x), T(x)) + RMSE(f(x̃), T(x)))`` with ``x̃`` the colour-jittered view of ``x``.

    Regressing the jittered view onto the plain teacher embedding teaches the
    student to ignore colour jitter and greyscale, as in LipSim's distillation.
    """
    return 0.5 * (rmse(student_plain, teacher) + rmse(student_jittered, teacher))


def lr_factor(
    step: int,
    total_steps: int,
    warmup_steps: int = 0,
    decay: str = "cosine",
    *,
    gamma: float = 0.1,
    milestones: tuple[float, ...] = (0.5, 0.75),
) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Linear warm-up, then decay over the remaining steps. With ``W = warmup_steps``,
    ``N = total_steps`` and progress ``p = (step − W) / max(1, N − W)`` clipped to [0, 1]:

    * warm-up (``step < W``): ``(step + 1) / W``;
    * ``cosine``: ``½ · (1 + cos(π · p))`` (1 right after warm-up, 0 at the end);
    * ``step``: ``gamma ** #{m in milestones : p ≥ m}`` (milestones are fractions of the decay phase);
    * ``constant``: 1.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    p = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    if decay == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    if decay == "step":
        return gamma ** sum(p >= m for m in milestones)
    if decay == "constant":
        return 1.0
    raise ValueError(f"unknown learning-rate decay {decay!r}; expected cosine, step or constant")


DECAYS = ("cosine", "step", "constant")
