"""MinNorm: the smallest budget at which PGD flips each 2AFC decision, by per-sample bisection over ε."""

from __future__ import annotations

import math

import torch

from attacks.base import Attack
from attacks.objective import MostDamaging, TwoAFCObjective
from attacks.pgd import PGD
from attacks.threat import lp_norm, sample_generators
from suite import validate
from suite.registry import register_attack
from suite.types import Triplets

#: search ceiling ε_max per norm when ``eps`` is not given (``[0, 1]`` image units)
DEFAULT_CEILING = {"l2": 10.0, "linf": 0.5}


@register_attack("minnorm", aliases=("min-norm",))
class MinNorm(Attack):
    r"""Minimal adversarial radius of each triplet: bisection over ε driving PGD
    ("Towards Deep Learning Models Resistant to Adversarial Attacks", Madry et al., 2018),
    the search used to measure a minimal adversarial perturbation with a fixed-budget
    attack (e.g. Carlini et al., "On Evaluating Adversarial Robustness", 2019, §5).

    Distance measure: ℓ2 or ℓ∞. Per sample, the radius is the size ``max‖δ‖`` of the
    smallest strict flip found (score ``min(j, 1 − j)``, ``d0 ≠ d1``: the metric decides
    for the option fewer people chose). The search keeps a bracket ``(lo, hi]``: ``hi``
    the size of the smallest flip found (``∞`` until one is), ``lo`` the largest budget
    at which PGD failed (``0`` at first). Each probe runs :class:`attacks.pgd.PGD` with
    early stopping at the per-sample budget

    - ``ε_max`` while ``hi = ∞`` (a failure there ends the search: radius ``∞``),
    - ``hi / 2`` while ``lo = 0`` (halving down to the first failure),
    - ``√(lo·hi)`` afterwards (bisection on a log scale, since the target is relative),

    a flip sets ``hi`` to its size (at most the probe's budget, often less), a failure
    sets ``lo``; a sample leaves once ``hi ≤ (1 + rtol)·lo`` or after ``max_probes``.
    The first probe starts from a random point of the ε_max-ball; every later probe
    starts from the smallest flip found so far, projected onto the probe's ball ∩ box
    (a warm start: that flip points roughly the shortest way across the boundary, so a
    few steps along the sphere finish the job; from random starts, 20 steps stop short
    by 1–2 %). Samples search independently (each has its own budget within one
    batched PGD run) and draw their random starts from per-sample streams seeded from
    ``(seed, sample_id)``, so a sample's radius does not depend on its batch.

    Guarantees. Every finite radius is the size of a point whose decision is flipped,
    so it is an upper bound on the true minimal radius (never below an exact
    certificate, up to float rounding of the metric). How close it comes depends on
    PGD finding a flip at a budget slightly above the true radius; a failed probe that
    PGD should have won only makes the answer larger. A sample already flipped (or
    with ``j = ½``, nothing to gain) has radius ``0``.

    Why bisection over PGD rather than FMN (Pintor et al., NeurIPS 2021): FMN adapts ε
    inside one run and is cheaper per sample, but its answer depends on its ε and step
    schedules; the bisection reuses the suite's PGD unchanged (exact ball ∩ box
    projection, per-sample streams, early stopping), so its radius is, by
    construction, consistent with what the ``pgd`` attack reports at each budget.

    Arguments:
        norm (str): ``"l2"`` or ``"linf"``. Default ``"l2"``.
        eps (float | None): the search ceiling ε_max; no larger perturbation is tried.
            Default ``None``, meaning ``10`` for ℓ2 and ``0.5`` for ℓ∞ (``[0, 1]`` units).
        threat (str): ``"ref"`` or ``"all"`` (each image within the budget; the size is
            the largest of the three). Default ``"ref"``.
        seed (int): seed of the per-sample random streams. Default ``0``.
        steps (int): PGD steps per probe. Default ``20``.
        rel_stepsize (float | None): PGD step size as a fraction of the probe's budget.
            Default ``None`` (PGD's ``2.5 / steps``).
        restarts (int): PGD restarts per probe. Default ``1``.
        rtol (float): relative width of the final bracket, ``hi ≤ (1 + rtol)·lo``.
            Default ``0.005``.
        max_probes (int): PGD runs per sample at most. Default ``40`` (halving from
            ε_max reaches ``10⁻⁶·ε_max`` in 20).

    Shape:
        - batch: :class:`suite.types.Triplets`, images ``(B, 3, H, W)`` in ``[0, 1]``, ``judge`` ``(B,)``.
        - :meth:`radius`: ``(B,)`` float64, ``inf`` where no flip was found up to ε_max.
        - :meth:`perturb`: :class:`suite.types.Triplets` of the same shapes; per sample the
          flipping point at the found radius, or the clean triplet where none was found.

    Examples::

        >>> attack = attacks.load("minnorm", norm="l2", eps=2.0)
        >>> radius = attack.radius(metrics.load("l2"), batch)   # (B,), inf = no flip up to 2.0
    """

    def __init__(self, *, norm: str = "l2", eps: float | None = None, threat: str = "ref", seed: int = 0,
                 steps: int = 20, rel_stepsize: float | None = None, restarts: int = 1,
                 rtol: float = 0.005, max_probes: int = 40):
        norm = validate.choice(norm, self.norms, "MinNorm: norm")
        super().__init__(norm=norm, eps=DEFAULT_CEILING[norm] if eps is None else eps, threat=threat, seed=seed)
        self.steps = validate.integer(steps, "minnorm: steps", 1)
        self.rel_stepsize = validate.optional_number(rel_stepsize, "minnorm: rel_stepsize", 0)
        self.restarts = validate.integer(restarts, "minnorm: restarts", 1)
        self.rtol = validate.number(rtol, "minnorm: rtol", 0, above=True)
        self.max_probes = validate.integer(max_probes, "minnorm: max_probes", 1)
        self._pgd = PGD(norm=self.norm, eps=self.eps, threat=self.threat, seed=self.seed, steps=self.steps,
                        rel_stepsize=self.rel_stepsize, restarts=self.restarts, early_stop=True)

    def radius(self, metric, batch: Triplets) -> torch.Tensor:
        """Per sample the size of the smallest strict flip found, ``(B,)`` float64 (``inf``: none up to ε_max)."""
        return self.search(metric, batch)[0]

    def perturb(self, metric, batch: Triplets) -> Triplets:
        return self.search(metric, batch)[1]

    def search(self, metric, batch: Triplets) -> tuple[torch.Tensor, Triplets]:
        """``(radius, flipping triplets)`` (see the class docstring)."""
        self.check_metric(metric)
        objective = TwoAFCObjective(metric, batch, self.threat)
        clean = objective.clean()
        with torch.no_grad():
            d0, d1 = objective.distances(clean)
        start = MostDamaging(clean, d0, d1, batch.judge)
        found = [c.clone() for c in clean]
        dev = batch.ref.device
        hi = torch.where(start.settled(), 0.0, math.inf).to(device=dev, dtype=torch.float64)
        lo = torch.zeros_like(hi)
        searching = ~start.settled() & (self.eps > 0)
        generators = sample_generators(self.seed, batch.sample_id)
        self._gradient_evaluations = 0
        for probe_index in range(self.max_probes):
            if not bool(searching.any()):
                break
            probe = torch.where(hi.isinf(), self.eps, torch.where(lo > 0, (lo * hi).sqrt(), hi / 2))
            budgets = torch.where(searching, probe, 0.0)
            trial = MostDamaging(clean, d0, d1, batch.judge)
            starts = None if probe_index == 0 else found
            self._gradient_evaluations += self._pgd.ascend(objective, trial, budgets, generators, starts)
            flipped = searching & trial.settled()
            size = torch.stack([lp_norm(t.double() - c.double(), self.norm)
                                for t, c in zip(trial.images, clean)]).amax(0)
            smaller = flipped & (size < hi)
            hi = torch.where(smaller, size, hi)
            for image, new in zip(found, trial.images):
                image[smaller] = new[smaller]
            lo = torch.where(searching & ~flipped, budgets, lo)
            searching &= (hi > (1 + self.rtol) * lo) & (lo < self.eps)
        return hi, objective.triplets(found)


__all__ = ["MinNorm", "DEFAULT_CEILING"]
