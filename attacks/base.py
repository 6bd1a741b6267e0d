"""The attack contracts (DESIGN.md, "Contracts: Attack"; protocols in :mod:`suite.types`).

Two kinds of plugin share the budget arguments of :class:`Budgeted`:

- :class:`Attack` (registry ``attacks``, entry points ``lipsim_suite.attacks``): built by
  :func:`attacks.load` with keyword options and applied with
  ``perturb(metric, batch) -> Triplets``. It moves the images allowed by its threat
  model (``ref``: the reference only; ``all``: the reference and both candidates, each
  within ε) inside the ε-ball of its norm and the ``[0, 1]`` box, pushes each decision
  towards the option fewer people chose, and returns per sample the most damaging
  point it visited, the clean input included, so an attacked 2AFC score never exceeds
  the natural one.
- :class:`DistanceAttack` (registry ``distance attacks``, entry points
  ``lipsim_suite.distance_attacks``): built by :func:`attacks.load_distance` and applied
  with ``maximise(metric, x) -> x + δ``, pushing ``d(x, x + δ)`` up within ε (the
  evaluation kind ``distance``).

Attacks are deterministic given ``seed``, see a metric only through its contract
(:class:`suite.types.MetricContract`), and never see datasets or files. A
gradient-based attack refuses a metric that declares ``differentiable = False`` with
a message naming the attacks that need no gradient.
"""

from __future__ import annotations

import torch

from suite import validate
from suite.errors import SuiteError
from suite.types import NORMS, THREATS, Triplets

#: what to suggest when a metric has no gradient
GRADIENT_FREE = "autoattack with options = { attacks = [\"square\"] } (a black-box attack)"


class Budgeted:
    """Options every attack shares.

    Arguments (keyword only):
        norm (str): ``"l2"`` or ``"linf"``; the norm of the budget. Default ``"l2"``.
        eps (float): the budget ε ≥ 0 in ``[0, 1]`` image units. Default ``1.0``.
        seed (int): seed of the attack's own random generator. Default ``0``.

    Subclasses narrow ``norms`` when they support fewer.
    """

    name: str = ""
    norms: tuple[str, ...] = NORMS
    #: whether ``perturb``/``maximise`` back-propagates through the metric
    needs_gradient: bool = True

    def __init__(self, *, norm: str = "l2", eps: float = 1.0, seed: int = 0):
        label = type(self).__name__
        self.norm = validate.choice(norm, self.norms, f"{label}: norm")
        self.eps = validate.number(eps, f"{label}: eps", 0)
        self.seed = validate.integer(seed, f"{label}: seed", 0)

    def generator(self, device: torch.device) -> torch.Generator:
        """A fresh generator seeded with ``seed``: the same call gives the same attack."""
        return torch.Generator(device=device).manual_seed(self.seed)

    def check_metric(self, metric) -> None:
        """Refuse a metric without a gradient before torch does, with a way out."""
        if self.needs_gradient and not getattr(metric, "differentiable", True):
            raise SuiteError(f"{self.name or type(self).__name__}: metric {metric.name!r} has no gradient "
                             f"(it declares differentiable = False); attacks that need none: {GRADIENT_FREE}")

    def gradient(self, metric, output: torch.Tensor, inputs) -> tuple[torch.Tensor, ...]:
        """``torch.autograd.grad(output, inputs)``; a metric whose output carries no gradient is a SuiteError."""
        if not output.requires_grad:
            raise SuiteError(f"{self.name or type(self).__name__}: metric {metric.name!r} returned distances "
                             "without a gradient (it declares differentiable = True, but its output is detached "
                             f"from the images); attacks that need none: {GRADIENT_FREE}")
        return torch.autograd.grad(output, inputs)

    @property
    def last_gradient_evaluations(self) -> int | None:
        """Per-sample forward + backward passes of the last ``perturb``/``maximise``/search call.

        The sum over gradient steps of the number of samples stepped (a batch of 8 for 10
        steps is 80); forward-only evaluations (the clean point, the final iterate) are
        not counted. ``None`` for an attack that does not count them.
        """
        return getattr(self, "_gradient_evaluations", None)

    def options(self) -> dict:
        """The constructor options, for logs and cell keys."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "name"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({args})"


class Attack(Budgeted):
    """Base class of every 2AFC attack (see the module docstring).

    Arguments (keyword only): those of :class:`Budgeted`, and
        threat (str): ``"ref"`` (perturb the reference only) or ``"all"`` (each of the
            three images within ε). Default ``"ref"``.

    Subclasses narrow ``threats`` when they support fewer.
    """

    threats: tuple[str, ...] = THREATS

    def __init__(self, *, norm: str = "l2", eps: float = 1.0, threat: str = "ref", seed: int = 0):
        super().__init__(norm=norm, eps=eps, seed=seed)
        self.threat = validate.choice(threat, self.threats, f"{type(self).__name__}: threat")

    def perturb(self, metric, batch: Triplets) -> Triplets:
        """The attacked triplets (see the module docstring for the guarantees)."""
        raise NotImplementedError


class DistanceAttack(Budgeted):
    """Base class of every single-image distance attack (see the module docstring)."""

    def maximise(self, metric, x: torch.Tensor) -> torch.Tensor:
        """The most distant visited point ``x + δ``, ``(B, 3, H, W)``, within ε of ``x`` and in the box."""
        raise NotImplementedError


__all__ = ["Attack", "Budgeted", "DistanceAttack", "GRADIENT_FREE"]
