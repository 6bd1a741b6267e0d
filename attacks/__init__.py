"""Attacks on 2AFC decisions and on single-image distances.

``attacks.load(name, **options)`` builds a 2AFC attack (``pgd``, ``mia``,
``autoattack``, ``minnorm``) or a retrieval attack (``evasion``, ``collision``: their
``perturb(metric, queries, gallery, targets)`` moves copy-detection queries, see
:mod:`attacks.retrieval`); ``attacks.load_distance(name, **options)`` a distance attack
(``distance``). Third-party attacks register through the ``lipsim_suite.attacks``
and ``lipsim_suite.distance_attacks`` entry-point groups.
"""

from __future__ import annotations

from attacks.base import Attack, DistanceAttack
from suite.registry import ATTACKS, DISTANCE_ATTACKS

# built-ins register themselves on import
from attacks import autoattack, distance, mia, minnorm, pgd, retrieval  # noqa: E402,F401


def load(name: str, **options) -> Attack:
    """Build the registered 2AFC attack ``name`` with ``options`` (norm, eps, threat, seed, steps, ...)."""
    if name.lower() not in ATTACKS and name in DISTANCE_ATTACKS:
        from suite.errors import SuiteError

        raise SuiteError(f"{name!r} is a distance attack (evaluation kind 'distance'), not a 2AFC attack; "
                         f"2AFC attacks: {', '.join(ATTACKS.names())}")
    return ATTACKS.build(name, Attack, **options)


def load_distance(name: str, **options) -> DistanceAttack:
    """Build the registered distance attack ``name`` with ``options`` (norm, eps, seed, steps, ...)."""
    if name.lower() not in DISTANCE_ATTACKS and name in ATTACKS:
        from suite.errors import SuiteError

        raise SuiteError(f"{name!r} is a 2AFC attack (evaluation kind 'attack'), not a distance attack; "
                         f"distance attacks: {', '.join(DISTANCE_ATTACKS.names())}")
    return DISTANCE_ATTACKS.build(name, DistanceAttack, **options)


__all__ = ["Attack", "DistanceAttack", "load", "load_distance"]
