"""Attacks on 2AFC decisions. ``attacks.load(name, **options)`` is the one door in.

Built-ins: ``pgd``, ``mia``, ``distance`` (single-image, for ``distance`` rows) and
``autoattack``. Third-party attacks register through the ``lipsim_suite.attacks``
entry-point group.
"""

from __future__ import annotations

from attacks.base import Attack
from suite.registry import ATTACKS

# built-ins register themselves on import
from attacks import autoattack, distance, mia, pgd  # noqa: E402,F401


def load(name: str, **options) -> Attack:
    """Build the registered attack ``name`` with ``options`` (norm, eps, threat, seed, steps, ...)."""
    return ATTACKS.build(name, Attack, **options)


__all__ = ["Attack", "load"]
