"""Which evaluations ran an attack at its published strength, and which were weaker ("non-standard").

RobustBench flags an entry whose evaluation may be unreliable; this module does the
same for an attack's options. The rule, applied to each attack or distance-attack cell:

1. The **reference setting** of an attack is its factory's signature defaults, read
   through the registry (:data:`suite.registry.ATTACKS`, then
   :data:`~suite.registry.DISTANCE_ATTACKS`), raised where the attack documents a
   stronger paper-grade setting than its default (:data:`PAPER_GRADE`: PGD's docstring
   says 20 steps keep demo cells short and 100 make a paper-grade evaluation).
   AutoAttack's defaults are the original ones (APGD-CE with 100 iterations + Square
   with 5000 queries), MIA's are Dong et al.'s (10 steps, decay 1).
2. An evaluation is **non-standard** when one of its *effort* options (:data:`EFFORT`:
   steps, iterations, queries, restarts, random start, sub-attacks) is weaker than the
   reference: a count below the reference value, ``random_start`` turned off, or a list
   of sub-attacks missing one of the reference's. Step sizes, momentum and switches
   that only save time (``early_stop``) are choices, not effort, and are not judged.
3. A **worst case** is standard when at least one of its attacks is (a per-sample
   minimum is at least as strong as each attack in it); its non-standard members are
   listed either way.
4. An attack the registry does not know (a plugin not installed where the page is
   built) or whose options no longer bind is neither: its flag is unknown (null).

Options are keyed with every default filled in (:func:`setting`), so ``{}`` and
``{"steps": 20}`` are one evaluation and ``{"steps": 10}`` another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from suite.errors import SuiteError

#: options a cell sets itself (budget, norm, threat, seed): not part of an attack's setting
CELL_LEVEL = ("norm", "eps", "threat", "seed")

#: options that measure how hard an attack tries (rule 2 of the module docstring)
EFFORT = ("steps", "n_iter", "n_queries", "iterations", "restarts", "n_restarts", "random_start", "attacks")

#: documented paper-grade settings stronger than the signature's default (see the module docstring)
PAPER_GRADE: dict[str, dict[str, Any]] = {"pgd": {"steps": 100}}


@dataclass(frozen=True)
class Setting:
    """One attack's options as evaluated, and how they compare with its reference setting."""

    name: str
    options: dict[str, Any]
    """every option with defaults filled in (cell-level ones left out); the raw options when unknown"""
    changed: dict[str, Any]
    """the options that differ from the signature's defaults (what the config asked for)"""
    weaker: tuple[str, ...]
    """one reason per effort option below the reference, e.g. ``"n_iter 5 < 100"``"""
    known: bool
    """whether the registry knew the attack (else ``standard`` is ``None``)"""

    @property
    def standard(self) -> bool | None:
        return (not self.weaker) if self.known else None

    def key(self) -> str:
        """Canonical JSON of :attr:`options`: equal exactly when two evaluations ran the same attack setting."""
        return canonical(self.options)


def canonical(value: Any) -> str:
    """Sorted, compact JSON (tuples as lists): the form options are compared and stored in."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@lru_cache(maxsize=None)
def _lookup(name: str) -> tuple[Any, str, dict[str, Any]] | None:
    """``(registry, canonical name, defaults)`` of an attack or distance attack; ``None`` if neither knows it."""
    from suite.registry import ATTACKS, DISTANCE_ATTACKS

    for registry in (ATTACKS, DISTANCE_ATTACKS):
        try:
            canonical_name = registry.canonical(name)
            return registry, canonical_name, registry.bind(canonical_name, {})
        except SuiteError:
            continue
    return None


def reference(name: str) -> dict[str, Any] | None:
    """The reference setting of ``name`` (defaults raised to :data:`PAPER_GRADE`), or ``None`` if unknown."""
    found = _lookup(name)
    if found is None:
        return None
    _, canonical_name, defaults = found
    merged = {**defaults, **PAPER_GRADE.get(canonical_name, {})}
    return _plain({k: v for k, v in merged.items() if k not in CELL_LEVEL})


def setting(name: str, options: dict[str, Any] | None) -> Setting:
    """Bind ``options`` of attack ``name`` to its signature and judge them against :func:`reference`."""
    options = dict(options or {})
    raw = _plain({k: v for k, v in options.items() if k not in CELL_LEVEL})
    found = _lookup(name)
    if found is None:
        return Setting(name, raw, raw, (), known=False)
    registry, canonical_name, defaults = found
    try:
        bound = registry.bind(canonical_name, options)
    except SuiteError:
        return Setting(canonical_name, raw, raw, (), known=False)
    bound = _plain({k: v for k, v in bound.items() if k not in CELL_LEVEL})
    plain_defaults = _plain({k: v for k, v in defaults.items() if k not in CELL_LEVEL})
    changed = {k: v for k, v in bound.items() if k not in plain_defaults or plain_defaults[k] != v}
    return Setting(canonical_name, bound, changed, tuple(weaker_than(bound, reference(canonical_name) or {})), True)


def weaker_than(options: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    """Why ``options`` are weaker than the reference setting ``ref`` (empty when they are not); see rule 2."""
    reasons = []
    for key, want in sorted(ref.items()):
        if key not in EFFORT or key not in options:
            continue
        got = options[key]
        if isinstance(want, bool):
            if want and got is False:
                reasons.append(f"{key}=false (reference: true)")
        elif isinstance(want, int):
            if isinstance(got, (int, float)) and not isinstance(got, bool) and got < want:
                reasons.append(f"{key} {got} < {want}")
        elif isinstance(want, (list, tuple)) and isinstance(got, (list, tuple)):
            missing = [m for m in want if m not in got]
            if missing:
                reasons.append(f"{key} lacks {', '.join(map(str, missing))}")
    return reasons


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    """Options as JSON data (tuples become lists), so keys and comparisons do not depend on the container."""
    return json.loads(canonical(options))


__all__ = ["CELL_LEVEL", "EFFORT", "PAPER_GRADE", "Setting", "canonical", "reference", "setting", "weaker_than"]
