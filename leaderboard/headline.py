"""The headline table of one (dataset, split): one row per metric, one column per headline setting, a rank.

Columns: the natural score, then under threat ``ref`` the worst-case robust score at each
ε of each norm, then the certified score at each ε (entries with ``headline`` set by
:func:`leaderboard.aggregate.aggregate`).

**Rank** (as MTEB's Borda ranks): in each worst-case column the metrics are ranked by score
(ties share the mean rank); a metric's rank is the order of its mean rank over the
worst-case columns it has. Without worst-case columns the certified columns rank, and
without those the natural score. A metric with none of the ranking columns comes last.
Equal mean ranks share a rank number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from leaderboard.formatting import fmt_eps, fmt_norm

#: datasets whose results are a smoke test of the pipeline, not a perceptual benchmark
SMOKE_DATASETS = ("synthetic-2afc",)

_KIND_ORDER = {"natural": 0, "worst": 1, "certified": 2}
_NORM_ORDER = {"l2": 0, "linf": 1}


@dataclass(frozen=True)
class Column:
    """One headline setting: ``kind`` natural | worst | certified, with its norm and ε."""

    kind: str
    norm: str = ""
    eps: float = 0.0

    def sort_key(self) -> tuple:
        return (_KIND_ORDER.get(self.kind, 9), _NORM_ORDER.get(self.norm, 9), self.norm, self.eps)

    @property
    def title(self) -> str:
        return {"natural": "natural", "worst": "worst case", "certified": "certified"}[self.kind]

    @property
    def budget(self) -> str:
        """``"ℓ2 ε=0.25"`` (empty for natural)."""
        return "" if self.kind == "natural" else f"{fmt_norm(self.norm)} ε={fmt_eps(self.eps)}"

    def text_label(self) -> str:
        """Header of the text and Markdown tables: ``"worst ℓ∞ 8/255 (0.0314)"``."""
        if self.kind == "natural":
            return "natural"
        short = {"worst": "worst", "certified": "cert."}[self.kind]
        return f"{short} {fmt_norm(self.norm)} {fmt_eps(self.eps)}"

    def describe(self) -> str:
        """In words: ``"worst-case score at ℓ2 ε=0.25, threat ref"``."""
        if self.kind == "natural":
            return "natural score"
        what = {"worst": "worst-case score", "certified": "certified score"}[self.kind]
        return f"{what} at {self.budget}, threat ref"


@dataclass
class Row:
    """One metric (label and id) of a headline table."""

    metric: str
    metric_id: str
    entries: dict[Column, dict] = field(default_factory=dict)
    rank: int | None = None
    mean_rank: float | None = None

    @property
    def n(self) -> int | None:
        """Samples of the natural entry (else the most of any headline entry)."""
        natural = self.entries.get(Column("natural"))
        if natural is not None:
            return natural["n"]
        return max((e["n"] for e in self.entries.values()), default=None)


@dataclass
class Table:
    """The headline of one (dataset, split, dataset fingerprint) and every entry behind it."""

    dataset: str
    split: str
    dataset_fp: str
    columns: list[Column]
    rows: list[Row]
    rank_columns: list[Column]
    entries: pl.DataFrame

    def title(self) -> str:
        return f"{self.dataset} · {self.split}"

    @property
    def smoke(self) -> bool:
        """Whether the results are a smoke test (synthetic data), not a perceptual benchmark."""
        return self.dataset in SMOKE_DATASETS

    def ranked_by(self) -> str:
        """How the rows are ranked, in words."""
        if not self.rank_columns:
            return "Not ranked: no scores."
        if len(self.rank_columns) == 1:
            return f"Ranked by the {self.rank_columns[0].describe()}."
        kinds = {c.kind for c in self.rank_columns}
        what = "worst-case" if kinds == {"worst"} else "certified" if kinds == {"certified"} else "natural"
        budgets = ", ".join(c.budget for c in self.rank_columns)
        return (f"Ranked by mean rank over the {len(self.rank_columns)} {what} columns "
                f"(threat ref: {budgets}), as MTEB's Borda ranks.")


def headline_tables(agg: pl.DataFrame) -> list[Table]:
    """One :class:`Table` per (dataset, split, dataset fingerprint) of ``agg``, in that order."""
    tables = []
    keys = agg.select("dataset", "split", "dataset_fp").unique().sort(["dataset", "split", "dataset_fp"]).rows()
    for dataset, split, fp in keys:
        entries = agg.filter((pl.col("dataset") == dataset) & (pl.col("split") == split)
                             & (pl.col("dataset_fp") == fp))
        rows: dict[tuple[str, str], Row] = {}
        for entry in entries.iter_rows(named=True):
            row = rows.setdefault((entry["metric"], entry["metric_id"]), Row(entry["metric"], entry["metric_id"]))
            if entry["headline"]:
                column = Column(entry["kind"], entry["norm"], float(entry["eps"])) if entry["kind"] != "natural" \
                    else Column("natural")
                row.entries[column] = entry
        columns = sorted({c for row in rows.values() for c in row.entries}, key=Column.sort_key)
        rank_columns = _rank_columns(columns)
        ordered = _rank(list(rows.values()), rank_columns)
        tables.append(Table(dataset, split, fp, columns, ordered, rank_columns, entries))
    return tables


def _rank_columns(columns: list[Column]) -> list[Column]:
    for kind in ("worst", "certified", "natural"):
        chosen = [c for c in columns if c.kind == kind]
        if chosen:
            return chosen
    return []


def _rank(rows: list[Row], columns: list[Column]) -> list[Row]:
    """Rows in rank order with :attr:`Row.rank` set (see the module docstring)."""
    ranks: dict[int, list[float]] = {id(r): [] for r in rows}
    for column in columns:
        scored = [(r, r.entries[column]["score"]) for r in rows
                  if column in r.entries and r.entries[column]["score"] is not None]
        for row, score in scored:
            better = sum(1 for _, s in scored if s > score)
            ties = sum(1 for _, s in scored if s == score)
            ranks[id(row)].append(better + (ties + 1) / 2)
    for row in rows:
        row.mean_rank = sum(ranks[id(row)]) / len(ranks[id(row)]) if ranks[id(row)] else None

    def natural(row: Row) -> float:
        entry = row.entries.get(Column("natural"))
        return -(entry["score"] or 0.0) if entry and entry["score"] is not None else 0.0

    ordered = sorted(rows, key=lambda r: (r.mean_rank is None, r.mean_rank or 0.0, natural(r), r.metric, r.metric_id))
    previous, number = None, 0
    for position, row in enumerate(ordered, start=1):
        if row.mean_rank is None:
            row.rank = None
            continue
        if row.mean_rank != previous:
            number, previous = position, row.mean_rank
        row.rank = number
    return ordered


__all__ = ["SMOKE_DATASETS", "Column", "Row", "Table", "headline_tables"]
