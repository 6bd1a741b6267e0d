"""Attacks on 2AFC decisions. ``attacks.load(name, **options)`` is the one door in.

Built-ins: ``pgd``, ``mia``, ``distance`` (single-image, for ``distance`` rows) and
``autoattack``. Third-party attacks register through the ``lipsim_suite.attacks``
entry-point group.
"""

from __future__ import annotations

from attacks.base import Attack
from suite.errors import SuiteError
from suite.registry import ATTACKS

# built-ins register themselves on import
from attacks import autoattack, distance, mia, pgd  # noqa: E402,F401


def load(name: str, **options) -> Attack:
    """Build the registered attack ``name`` with ``options`` (norm, eps, threat, seed, steps, ...)."""
    factory = ATTACKS.get(name)
    try:
        attack = factory(**options)
    except TypeError as err:
        raise SuiteError(f"attack {name!r}: bad options {sorted(options)}: {err}") from err
    if not isinstance(attack, Attack):
        raise SuiteError(f"attack {name!r} must build an attacks.Attack; got {type(attack).__name__}")
    attack.name = ATTACKS.canonical(name)
    return attack


__all__ = ["Attack", "load"]
