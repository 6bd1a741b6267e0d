"""The attack contract (DESIGN.md, "Contracts: Attack").

An attack is built by :func:`attacks.load` with keyword options and applied with
``perturb(metric, batch) -> Triplets``. It moves the images allowed by its threat
model (``ref``: the reference only; ``all``: the reference and both candidates, each
within ε) inside the ε-ball of its norm and the ``[0, 1]`` box, pushes each decision
towards the option fewer people chose, and returns per sample the most damaging point
it visited, the clean input included, so an attacked 2AFC score never exceeds the
natural one. Attacks are deterministic given ``seed``.
"""

from __future__ import annotations

import math

import torch

from attacks.objective import THREATS
from attacks.threat import NORMS
from suite.errors import SuiteError
from suite.types import Triplets


def check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SuiteError(f"{name} must be an integer ≥ {minimum}; got {value!r}")
    return value


def check_float(name: str, value, minimum: float = 0.0, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise SuiteError(f"{name} must be a finite number ≥ {minimum:g}; got {value!r}")
    return float(value)


class Attack:
    """Base class of every attack.

    Arguments (keyword only):
        norm (str): ``"l2"`` or ``"linf"``; the norm of the budget. Default ``"l2"``.
        eps (float): the budget ε ≥ 0 in ``[0, 1]`` image units. Default ``1.0``.
        threat (str): ``"ref"`` (perturb the reference only) or ``"all"`` (each of the
            three images within ε). Default ``"ref"``.
        seed (int): seed of the attack's own random generator. Default ``0``.

    Subclasses narrow ``norms`` / ``threats`` when they support fewer.
    """

    name: str = ""
    norms: tuple[str, ...] = NORMS
    threats: tuple[str, ...] = THREATS

    def __init__(self, *, norm: str = "l2", eps: float = 1.0, threat: str = "ref", seed: int = 0):
        label = type(self).__name__
        if norm not in self.norms:
            raise SuiteError(f"{label}: norm must be one of {', '.join(self.norms)}; got {norm!r}")
        if threat not in self.threats:
            raise SuiteError(f"{label}: threat must be one of {', '.join(self.threats)}; got {threat!r}")
        self.norm = norm
        self.eps = check_float(f"{label}: eps", eps)
        self.threat = threat
        self.seed = check_int(f"{label}: seed", seed, 0)

    def perturb(self, metric, batch: Triplets) -> Triplets:
        """The attacked triplets (see the module docstring for the guarantees)."""
        raise NotImplementedError

    def generator(self, device: torch.device) -> torch.Generator:
        """A fresh generator seeded with ``seed``: the same call gives the same attack."""
        return torch.Generator(device=device).manual_seed(self.seed)

    def options(self) -> dict:
        """The constructor options, for logs and cell keys."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "name"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({args})"


__all__ = ["Attack", "check_int", "check_float"]
