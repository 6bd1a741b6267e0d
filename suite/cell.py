"""A cell of the grid: one (metric, dataset split, kind, attack, threat, norm, budgets, seed).

Its key, the hash of its full specification (the metric's id and the dataset's
fingerprint included), names its results in the store and is computed once
(:attr:`Cell.key`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import suite
from suite.store import cell_key


@dataclass(frozen=True)
class Cell:
    """The full specification of one cell; :attr:`key` is its hash.

    ``budgets`` are the ε each row is evaluated at: ``(0.0,)`` for natural cells, the
    attack's ε for attack and distance cells, every certified ε for certified cells.
    """

    metric: str
    metric_name: str
    metric_options: dict[str, Any]
    metric_id: str
    dataset: str
    dataset_options: dict[str, Any]
    split: str
    limit: int | None
    dataset_fp: str
    kind: str
    attack: str = ""
    attack_name: str = ""
    attack_options: dict[str, Any] = field(default_factory=dict)
    threat: str = ""
    norm: str = ""
    budgets: tuple[float, ...] = (0.0,)
    seed: int = 0
    batch_size: int = 32

    def spec(self) -> dict[str, Any]:
        """The cell as plain JSON data (what its key hashes and its sidecar records)."""
        out = asdict(self)
        out["budgets"] = list(self.budgets)
        out["suite_version"] = suite.__version__
        return out

    @cached_property
    def key(self) -> str:
        return cell_key(self.spec())

    @property
    def eps(self) -> float:
        """The budget of a single-budget cell (attack, distance)."""
        return self.budgets[0]

    def describe(self) -> str:
        parts = [self.metric, f"{self.dataset}/{self.split}", self.kind]
        if self.attack:
            parts.append(self.attack)
        if self.threat:
            parts.append(f"threat={self.threat}")
        if self.norm:
            parts.append(f"{self.norm} ε={','.join(f'{e:g}' for e in self.budgets)}")
        return " ".join(parts)


__all__ = ["Cell"]
