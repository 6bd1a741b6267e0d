"""PGD: projected gradient ascent on the 2AFC margin."""

from __future__ import annotations

import torch

from attacks.base import Attack
from attacks.objective import MostDamaging, TwoAFCObjective
from attacks.threat import project, random_start, steepest_direction
from suite import validate
from suite.errors import SuiteError
from suite.registry import register_attack
from suite.types import Triplets


@register_attack("pgd")
class PGD(Attack):
    r"""PGD in "Towards Deep Learning Models Resistant to Adversarial Attacks" (Madry et al., 2018).

    Distance measure: ℓ2 or ℓ∞. Each step moves the perturbed images along the
    steepest-ascent direction of the 2AFC margin ``y·(d1 − d0)``, ``y = sign(j − ½)``
    (``sign`` of the gradient for ℓ∞, the normalised gradient for ℓ2), by ``α``, then
    projects back onto the ε-ball ∩ ``[0, 1]`` box of the clean image
    (:func:`attacks.threat.project`). Works for any metric whose ``distance`` (or
    ``embed``) is differentiable; under threat ``ref`` with ``embed`` a step costs one
    forward and backward pass of the reference only.

    Arguments:
        norm (str): ``"l2"`` or ``"linf"``. Default ``"l2"``.
        eps (float): maximum perturbation ε of each perturbed image, ``[0, 1]`` units. Default ``1.0``.
        threat (str): ``"ref"`` (reference only) or ``"all"`` (reference and candidates,
            each within ε). Default ``"ref"``.
        seed (int): seed of the random starts. Default ``0``.
        steps (int): gradient steps per restart. Default ``20`` (Madry et al. use 7 to
            100 steps; 20 keeps demo cells short, use 100 for a paper-grade evaluation).
        rel_stepsize (float | None): step size α as a fraction of ε. Default ``None``,
            meaning ``2.5 / steps`` (the step rule of the MadryLab ``robustness``
            library: any start can reach the boundary of the ball and walk along it).
        random_start (bool): start each restart from a uniform point of the ball
            (:func:`attacks.threat.random_start`); without it the run starts from the
            clean images. Default ``True``.
        restarts (int): independent runs; the most damaging point over all of them is
            kept. Default ``1``. More than one needs ``random_start``.

    Shape:
        - batch: :class:`suite.types.Triplets` with ``ref``, ``x0``, ``x1`` of shape
          ``(B, 3, H, W)`` in ``[0, 1]`` and ``judge`` of shape ``(B,)``.
        - output: :class:`suite.types.Triplets` of the same shapes; per sample the
          visited point (clean included) with the lowest 2AFC score, then the largest
          margin.

    Examples::

        >>> attack = attacks.load("pgd", norm="linf", eps=4 / 255, steps=20)
        >>> adv = attack.perturb(metrics.load("l2"), batch)
        >>> adv.ref.shape == batch.ref.shape
        True
    """

    def __init__(self, *, norm: str = "l2", eps: float = 1.0, threat: str = "ref", seed: int = 0,
                 steps: int = 20, rel_stepsize: float | None = None, random_start: bool = True,
                 restarts: int = 1):
        super().__init__(norm=norm, eps=eps, threat=threat, seed=seed)
        self.steps = validate.integer(steps, "pgd: steps", 1)
        self.rel_stepsize = validate.optional_number(rel_stepsize, "pgd: rel_stepsize", 0)
        self.random_start = bool(random_start)
        self.restarts = validate.integer(restarts, "pgd: restarts", 1)
        if self.restarts > 1 and not self.random_start:
            raise SuiteError("pgd: restarts > 1 needs random_start = true (otherwise every restart is the same run)")

    @property
    def step_size(self) -> float:
        rel = 2.5 / self.steps if self.rel_stepsize is None else self.rel_stepsize
        return rel * self.eps

    def perturb(self, metric, batch: Triplets) -> Triplets:
        self.check_metric(metric)
        objective = TwoAFCObjective(metric, batch, self.threat)
        clean = objective.clean()
        with torch.no_grad():
            best = MostDamaging(clean, *objective.distances(clean), batch.judge)
        if self.eps == 0:
            return objective.triplets(best.images)
        gen = self.generator(batch.ref.device)
        alpha = self.step_size
        for _ in range(self.restarts):
            if self.random_start:
                adv = [random_start(c, self.eps, self.norm, gen) for c in clean]
            else:
                adv = [c.clone() for c in clean]
            for _ in range(self.steps):
                adv = [a.detach().requires_grad_() for a in adv]
                d0, d1 = objective.distances(adv)
                grads = self.gradient(metric, objective.margin(d0, d1).sum(), adv)
                best.update(adv, d0, d1)
                with torch.no_grad():
                    adv = [project(a + alpha * steepest_direction(g, self.norm), c, self.eps, self.norm)
                           for a, g, c in zip(adv, grads, clean)]
            with torch.no_grad():
                best.update(adv, *objective.distances(adv))
        return objective.triplets(best.images)


__all__ = ["PGD"]
