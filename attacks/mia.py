"""MIA: momentum iterative attack (MI-FGSM) on the 2AFC margin."""

from __future__ import annotations

import torch

from attacks.base import Attack
from attacks.objective import MostDamaging, TwoAFCObjective
from attacks.threat import normalize_l1, project, steepest_direction
from suite import validate
from suite.registry import register_attack
from suite.types import Triplets


@register_attack("mia", aliases=("mifgsm", "mi-fgsm"))
class MIA(Attack):
    r"""MI-FGSM in "Boosting Adversarial Attacks with Momentum" (Dong et al., CVPR 2018).

    Distance measure: ℓ2 or ℓ∞. From the clean images (no random start, as in the
    paper), each step accumulates the ℓ1-normalised gradient of the 2AFC margin
    ``y·(d1 − d0)`` into a momentum ``g ← μ·g + ∇/‖∇‖₁`` and moves by ``α`` along
    ``sign(g)`` (ℓ∞) or ``g/‖g‖₂`` (ℓ2), then projects back onto the ε-ball ∩
    ``[0, 1]`` box (:func:`attacks.threat.project`). Under threat ``all`` each image has
    its own momentum.

    Early stopping. A sample whose most damaging point so far already has the lowest
    score any point can have, ``min(j, 1 − j)`` (a strict flip, ``d0 ≠ d1``; samples
    with ``j = ½`` from the start), leaves the batch with its momentum; the following
    steps run on the remaining samples only. Per-sample scores are those of the run
    without early stopping (up to the last bits a batched float kernel may change with
    the batch size). :attr:`last_gradient_evaluations` counts the per-sample forward +
    backward passes of the last call.

    Arguments:
        norm (str): ``"l2"`` or ``"linf"``. Default ``"l2"``.
        eps (float): maximum perturbation ε of each perturbed image. Default ``1.0``.
        threat (str): ``"ref"`` or ``"all"``. Default ``"ref"``.
        seed (int): unused by this deterministic attack, kept for the common contract. Default ``0``.
        steps (int): iterations T. Default ``10`` (the paper's setting).
        decay (float): momentum decay factor μ ≥ 0. Default ``1.0`` (the paper's setting;
            ``0`` gives the basic iterative method).
        rel_stepsize (float | None): step size α as a fraction of ε. Default ``None``,
            meaning ``1 / steps`` (the paper's ``α = ε/T``).
        early_stop (bool): drop a sample from the batch once its decision is flipped
            strictly (see above). Default ``True``; ``False`` steps every sample to the end.

    Shape:
        - batch: :class:`suite.types.Triplets`, images ``(B, 3, H, W)`` in ``[0, 1]``, ``judge`` ``(B,)``.
        - output: :class:`suite.types.Triplets` of the same shapes, per sample the most
          damaging visited point (clean included).

    Examples::

        >>> attack = attacks.load("mia", norm="linf", eps=4 / 255, decay=1.0)
        >>> adv = attack.perturb(metric, batch)
    """

    def __init__(self, *, norm: str = "l2", eps: float = 1.0, threat: str = "ref", seed: int = 0,
                 steps: int = 10, decay: float = 1.0, rel_stepsize: float | None = None, early_stop: bool = True):
        super().__init__(norm=norm, eps=eps, threat=threat, seed=seed)
        self.steps = validate.integer(steps, "mia: steps", 1)
        self.decay = validate.number(decay, "mia: decay", 0)
        self.rel_stepsize = validate.optional_number(rel_stepsize, "mia: rel_stepsize", 0)
        self.early_stop = validate.boolean(early_stop, "mia: early_stop")

    @property
    def step_size(self) -> float:
        rel = 1.0 / self.steps if self.rel_stepsize is None else self.rel_stepsize
        return rel * self.eps

    def perturb(self, metric, batch: Triplets) -> Triplets:
        self.check_metric(metric)
        objective = TwoAFCObjective(metric, batch, self.threat)
        clean = objective.clean()
        with torch.no_grad():
            best = MostDamaging(clean, *objective.distances(clean), batch.judge)
        self._gradient_evaluations = 0
        rows = torch.arange(len(batch), device=batch.ref.device)
        if self.early_stop:
            rows = rows[~best.settled()]
        if self.eps == 0 or rows.numel() == 0:
            return objective.triplets(best.images)
        alpha = self.step_size
        centers = [c[rows] for c in clean]
        adv = [c.clone() for c in centers]
        momentum = [torch.zeros_like(c) for c in centers]
        for _ in range(self.steps):
            adv = [a.detach().requires_grad_() for a in adv]
            d0, d1 = objective.distances(adv, rows)
            grads = self.gradient(metric, objective.margin(d0, d1, rows).sum(), adv)
            self._gradient_evaluations += rows.numel()
            best.update(adv, d0, d1, rows)
            keep = ~best.settled()[rows] if self.early_stop else None
            if keep is not None and not bool(keep.all()):  # copy the survivors only when someone left
                rows = rows[keep]
                adv, grads, centers, momentum = ([t[keep] for t in ts] for ts in (adv, grads, centers, momentum))
                if rows.numel() == 0:
                    break
            with torch.no_grad():
                momentum = [self.decay * m + normalize_l1(g) for m, g in zip(momentum, grads)]
                adv = [project(a + alpha * steepest_direction(m, self.norm), c, self.eps, self.norm)
                       for a, m, c in zip(adv, momentum, centers)]
        if rows.numel():
            with torch.no_grad():
                best.update(adv, *objective.distances(adv, rows), rows)
        return objective.triplets(best.images)


__all__ = ["MIA"]
