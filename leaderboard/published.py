"""Published reference figures (``docs/published.toml``) and which of them match one of our entries.

A published figure sits beside ours, like RobustBench's "reported" column, only where the
setting is the same: dataset, split, kind (natural; a robust figure beside our worst case;
certified), threat, norm, ε (to 1e-6) and metric (the suite's ``metric_name``, and every
``metric_options`` the figure names equal to ours, defaults filled in through the metric
registry when our config left an option out).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.config import parse_eps
from suite.errors import SuiteError

PUBLISHED_PATH = Path(__file__).resolve().parents[1] / "docs" / "published.toml"

#: our kind of entry that a published column's kind sits beside
OUR_KIND = {"natural": "natural", "robust": "worst", "certified": "certified"}


@dataclass(frozen=True)
class Figure:
    """One published score."""

    source: str
    citation: str
    what: str
    metric: str
    note: str
    metric_name: str
    dataset: str
    split: str
    kind: str
    threat: str
    attack: str
    norm: str
    eps: float
    score: float
    metric_options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def label(self) -> str:
        """``"LipSim (hinge margin 0.2)"``: the metric as the source prints it."""
        return f"{self.metric} ({self.note})" if self.note else self.metric


def load_published(path: str | Path = PUBLISHED_PATH) -> list[Figure]:
    """Every figure of ``path`` (see the file's header for its layout); ``nan`` scores are left out."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise SuiteError(f"published figures {str(path)!r} cannot be read: {err}") from None
    sources = data.get("sources", {})
    figures = []
    for t, table in enumerate(data.get("tables", [])):
        where = f"{path.name}: table {t + 1}"
        columns = [_column(c, where) for c in table.get("columns", [])]
        citation = sources.get(table.get("source", ""), {}).get("citation", table.get("source", ""))
        for row in table.get("rows", []):
            scores = row.get("scores", [])
            if len(scores) != len(columns):
                raise SuiteError(f"{where}, row {row.get('metric')!r}: {len(scores)} scores for {len(columns)} columns")
            for (kind, norm, eps), score in zip(columns, scores):
                if isinstance(score, float) and math.isnan(score):
                    continue
                figures.append(Figure(
                    source=table.get("source", ""), citation=citation, what=table.get("what", ""),
                    metric=row.get("metric", ""), note=row.get("note", ""), metric_name=row.get("metric_name", ""),
                    dataset=table.get("dataset", ""), split=table.get("split", ""), kind=kind,
                    threat="" if kind == "natural" else table.get("threat", ""),
                    attack="" if kind == "natural" else table.get("attack", ""), norm=norm, eps=eps,
                    score=float(score), metric_options=dict(row.get("metric_options", {}))))
    return figures


def _column(text: str, where: str) -> tuple[str, str, float]:
    """``"natural"`` → ``("natural", "", 0.0)``; ``"robust l2 0.5"`` → ``("robust", "l2", 0.5)``."""
    parts = str(text).split()
    if parts == ["natural"]:
        return "natural", "", 0.0
    if len(parts) == 3 and parts[0] in ("robust", "certified"):
        return parts[0], parts[1], parse_eps(parts[2], where)
    raise SuiteError(f"{where}: column {text!r} must be 'natural', 'robust NORM EPS' or 'certified NORM EPS'")


def matching(figures: list[Figure], *, kind: str, dataset: str, split: str, threat: str, norm: str, eps: float,
             metric_name: str, metric_options: dict[str, Any]) -> list[Figure]:
    """The figures published for one of our entries (see the module docstring)."""
    out = []
    for fig in figures:
        if OUR_KIND.get(fig.kind) != kind or not fig.metric_name or fig.metric_name != metric_name:
            continue
        if (fig.dataset, fig.split) != (dataset, split):
            continue
        if kind != "natural" and (fig.threat != threat or fig.norm != norm
                                  or abs(fig.eps - eps) > 1e-6 * max(1.0, abs(eps))):
            continue
        if all(_option(metric_name, metric_options, k) == v for k, v in fig.metric_options.items()):
            out.append(fig)
    return out


def _option(metric_name: str, options: dict[str, Any], key: str) -> Any:
    """Our metric's option ``key``, its factory's default when the config left it out (``None`` if unknown)."""
    if key in options:
        return options[key]
    from suite.registry import METRICS

    try:
        return METRICS.bind(metric_name, dict(options)).get(key)
    except SuiteError:
        return None


__all__ = ["Figure", "OUR_KIND", "PUBLISHED_PATH", "load_published", "matching"]
