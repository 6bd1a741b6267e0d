"""Distance attack: how far can ε move an image away from itself in the metric's eyes?"""

from __future__ import annotations

import torch

from attacks.base import DistanceAttack
from attacks.threat import project, random_start, steepest_direction
from suite import validate
from suite.registry import register_distance_attack


@register_distance_attack("distance", aliases=("pgd-distance",))
class DistancePGD(DistanceAttack):
    r"""Maximise ``d(x, x + δ)`` over ``‖δ‖ ≤ ε`` and the ``[0, 1]`` box, PGD-style.

    Projected gradient ascent ("Towards Deep Learning Models Resistant to Adversarial
    Attacks", Madry et al., 2018) on the distance between an image and its perturbed
    copy: how far can a perturbation of size ε move an image in the metric's eyes? It
    is the attack side of the distance bound of a 1-Lipschitz metric (LipSim,
    Ghazanfari et al., ICLR 2024; DESIGN.md): for a certifiable metric the evaluator
    sets the reached value next to ``metric.distance_bound(x, ε)``, which it may never
    exceed.

    Distance measure: ℓ2 or ℓ∞. Every restart starts from a uniform random point of
    the ball: ``δ = 0`` is a minimum of ``d(x, x + δ)`` where the gradient of most
    metrics vanishes. For embedding metrics ``embed(x)`` is computed once. The result
    is, per image, the visited point (clean included) with the largest distance.

    Arguments:
        norm (str): ``"l2"`` or ``"linf"``. Default ``"l2"``.
        eps (float): maximum perturbation ε. Default ``1.0``.
        seed (int): seed of the random starts. Default ``0``.
        steps (int): gradient steps per restart. Default ``20``.
        rel_stepsize (float | None): step size as a fraction of ε. Default ``None``,
            meaning ``2.5 / steps``.
        restarts (int): random restarts; the largest distance is kept. Default ``1``.

    Shape:
        - x: ``(B, 3, H, W)`` in ``[0, 1]``.
        - ``maximise`` returns ``(B, 3, H, W)``; ``reached`` returns ``(B,)``.

    Examples::

        >>> attack = attacks.load_distance("distance", norm="l2", eps=0.5)
        >>> x_adv = attack.maximise(metric, batch.ref)
        >>> attack.reached(metric, batch.ref)   # d(x, x_adv) per image
    """

    def __init__(self, *, norm: str = "l2", eps: float = 1.0, seed: int = 0,
                 steps: int = 20, rel_stepsize: float | None = None, restarts: int = 1):
        super().__init__(norm=norm, eps=eps, seed=seed)
        self.steps = validate.integer(steps, "distance: steps", 1)
        self.rel_stepsize = validate.optional_number(rel_stepsize, "distance: rel_stepsize", 0)
        self.restarts = validate.integer(restarts, "distance: restarts", 1)

    @property
    def step_size(self) -> float:
        rel = 2.5 / self.steps if self.rel_stepsize is None else self.rel_stepsize
        return rel * self.eps

    def maximise(self, metric, x: torch.Tensor) -> torch.Tensor:
        """The most distant visited point ``x + δ``, ``(B, 3, H, W)``, within ε of ``x`` and in the box."""
        self.check_metric(metric)
        with torch.no_grad():
            rx = metric.represent(x)

        def dist(z):
            return metric.distance_to(z, rx)

        with torch.no_grad():
            best, best_d = x.detach().clone(), dist(x).detach()
        if self.eps == 0:
            return best

        def keep(z, d):
            better = d.detach() > best_d
            best[better] = z.detach()[better]
            best_d[better] = d.detach()[better]

        gen = self.generator(x.device)
        for _ in range(self.restarts):
            adv = random_start(x, self.eps, self.norm, gen)
            for _ in range(self.steps):
                adv = adv.detach().requires_grad_()
                d = dist(adv)
                (grad,) = self.gradient(metric, d.sum(), adv)
                keep(adv, d)
                with torch.no_grad():
                    adv = project(adv + self.step_size * steepest_direction(grad, self.norm), x, self.eps, self.norm)
            with torch.no_grad():
                keep(adv, dist(adv))
        return best

    def reached(self, metric, x: torch.Tensor) -> torch.Tensor:
        """``metric.distance(x, maximise(metric, x))`` per image, ``(B,)``, detached."""
        x_adv = self.maximise(metric, x)
        with torch.no_grad():
            return metric.distance(x, x_adv)


__all__ = ["DistancePGD"]
