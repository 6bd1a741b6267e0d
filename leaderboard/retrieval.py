"""Copy detection (retrieval) on the leaderboard: the store's retrieval rows → one table per dataset split.

The store holds two tasks (``suite/schema.py``, column ``task``): 2AFC triplets and
retrieval queries. :func:`split_tasks` is the one place that tells them apart; every 2AFC
aggregation (:func:`leaderboard.aggregate.aggregate`) keeps only the 2AFC rows, so a
retrieval dataset in the store changes no 2AFC number.

A retrieval row is one query (per budget): ``d0`` the distance to its nearest true match
(null when it has none), ``d1`` to its nearest non-match, ``score`` 1 when a true match
ranks first (recall@1 of that query), ``ap`` its average precision; collision rows
(threat ``collision``) are (query, target) pairs whose ``score`` is 1 while the target is
*not* the first match. :func:`retrieval_entries` reduces them, in the manner of
:func:`~leaderboard.aggregate.aggregate`, to one entry per (dataset, split, metric,
measure, norm, ε), :data:`RETRIEVAL_SCHEMA`; values are percentages, recomputed from
nothing but the rows:

- ``recall@1``: mean ``score`` of the natural rows; ``mAP``: mean ``ap`` over the natural
  rows that have one; ``micro-AP``: :func:`micro_average_precision` of the natural rows
  (DISC21's score);
- ``evasion``: recall@1 of the ``worst`` rows of threat ``query`` where the store has them,
  else of its ``attack`` rows (each query at its minimum over the cells that hold it);
- ``collision``: share of collision pairs the metric resisted (worst rows of threat
  ``collision`` where present, else attack rows; each pair at its minimum);
- ``certified``: mean ``score`` of the ``certified`` rows (1 iff the top-1 match is correct
  and its certified radius exceeds ε).

Intervals: the 95% percentile bootstrap over queries of :mod:`leaderboard.intervals` (the
2AFC tables' helper; it fits any mean of per-query values), none for micro-AP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from leaderboard.cells import CELL_SCHEMA
from leaderboard.formatting import fmt_eps, fmt_norm
from leaderboard.intervals import LEVEL, RESAMPLES, bootstrap_interval
from suite import retrieval as suite_retrieval

#: the ``task`` of a retrieval row; a null task (or a store without the column) is 2AFC
RETRIEVAL = "retrieval"

#: the measures of a retrieval table, in column order
MEASURES = ("recall@1", "mAP", "micro-AP", "evasion", "collision", "certified")

#: measures of the unattacked queries (one column each, no budget)
NATURAL_MEASURES = ("recall@1", "mAP", "micro-AP")

#: the ``threat`` of evasion and certified rows (only the query moves) and of collision rows
QUERY_THREAT = "query"
COLLISION_THREAT = "collision"

#: datasets whose retrieval results only show that the pipeline runs (synthetic data)
SMOKE_PREFIX = "synthetic"

RETRIEVAL_SCHEMA: dict[str, pl.DataType] = {
    "dataset": pl.String,
    "dataset_fp": pl.String,
    "split": pl.String,
    "metric": pl.String,
    "metric_id": pl.String,
    "measure": pl.String,
    "kind": pl.String,
    "attack": pl.String,
    "norm": pl.String,
    "eps": pl.Float64,
    "n": pl.Int64,
    "value": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "cells": pl.Int64,
    "seconds": pl.Float64,
    "suite_version": pl.String,
}
"""Columns of :func:`retrieval_entries` (and of ``leaderboard.retrieval.csv`` and the JSON's ``retrieval``):
``measure`` one of :data:`MEASURES`; ``kind`` the kind of rows behind it (``natural``, ``worst`` or
``attack``, ``certified``); ``attack`` the attack labels behind an evasion or collision entry (``+``-joined);
``norm``/``eps`` its budget (``""``/0 for the natural measures); ``n`` queries (collision: pairs; mAP:
queries with an AP); ``value`` in percent with its 95% interval ``ci_low``–``ci_high`` (null for micro-AP);
``cells``, ``seconds`` and ``suite_version`` of the rows behind it."""

_WHERE = ["dataset", "dataset_fp", "split", "metric", "metric_id"]
_NORM_ORDER = {"l2": 0, "linf": 1}


def split_tasks(rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(2AFC rows, retrieval rows)`` of store rows: retrieval rows are those whose ``task`` is
    ``"retrieval"``; a null ``task`` or ``"2afc"``, and every row of a store written before the column
    existed (no ``task`` column at all), is 2AFC."""
    if "task" not in rows.columns:
        return rows, rows.clear()
    retrieval = pl.col("task").fill_null("2afc") == RETRIEVAL
    return rows.filter(~retrieval), rows.filter(retrieval)


def micro_average_precision(d0, d1, correct) -> float | None:
    """DISC21's micro average precision of queries' top-1 predictions, as a fraction, from retrieval rows'
    ``d0``, ``d1`` and ``score`` (``correct``); ``None`` when no query has a true match.

    Each query contributes one prediction, its first-ranked gallery item, at distance
    ``min(d0, d1)`` (a null distance counts as +∞: a query without a true match predicts its
    nearest non-match); its confidence is minus that distance, and it is right when its score
    is 1. The pooling, the order (most confident first, ties with the wrong predictions
    first) and the sum ``Σ_k P(k)·correct_k / n_positive`` over the pooled list are
    :func:`suite.retrieval.micro_average_precision`'s, with ``n_positive`` the number of
    queries that have a true match (``d0`` not null). Unlike mAP it asks that one distance
    threshold serve every query.
    """
    d0 = np.array([np.inf if v is None else float(v) for v in d0], dtype=np.float64)
    d1 = np.array([np.inf if v is None else float(v) for v in d1], dtype=np.float64)
    right = np.array([v is not None and float(v) == 1.0 for v in correct], dtype=bool)
    positives = int(np.isfinite(d0).sum())
    if positives == 0:
        return None
    return float(suite_retrieval.micro_average_precision(-np.minimum(d0, d1), right, positives))


def retrieval_entries(rows: pl.DataFrame, cells: pl.DataFrame | None = None) -> pl.DataFrame:
    """The retrieval entries of store ``rows`` (2AFC rows among them are ignored), :data:`RETRIEVAL_SCHEMA`,
    sorted by dataset, split, fingerprint, metric, measure, norm, ε. ``cells``:
    :func:`leaderboard.cells.describe_cells` of the cells that wrote them (their dataset fingerprints;
    without it ``""``). See the module docstring for each measure."""
    _, rows = split_tasks(rows)
    if rows.is_empty():
        return pl.DataFrame(schema=RETRIEVAL_SCHEMA)
    if cells is None:
        cells = pl.DataFrame(schema=CELL_SCHEMA)
    rows = (rows.join(cells.select("cell", "dataset_fp"), on="cell", how="left")
            .with_columns(pl.col("dataset_fp").fill_null("")))
    out: list[dict] = []
    natural = rows.filter(pl.col("kind") == "natural")
    for key, group in natural.group_by(_WHERE, maintain_order=True):
        base = {**dict(zip(_WHERE, key)), "kind": "natural", "attack": "", "norm": "", "eps": 0.0}
        out.append(_entry(base, "recall@1", group, group["score"].drop_nulls()))
        out.append(_entry(base, "mAP", group, group["ap"].drop_nulls()))
        micro = micro_average_precision(group["d0"].to_list(), group["d1"].to_list(), group["score"].to_list())
        out.append({**_entry(base, "micro-AP", group, pl.Series([], dtype=pl.Float64)), "n": group.height,
                    "value": None if micro is None else 100 * micro})
    for measure, threat in (("evasion", QUERY_THREAT), ("collision", COLLISION_THREAT)):
        out += _attacked(rows, measure, threat)
    certified = rows.filter((pl.col("kind") == "certified") & (pl.col("attack") == ""))
    for key, group in certified.group_by([*_WHERE, "norm", "eps"], maintain_order=True):
        base = {**dict(zip([*_WHERE, "norm", "eps"], key)), "kind": "certified", "attack": ""}
        out.append(_entry(base, "certified", group, group["score"].drop_nulls()))
    if not out:
        return pl.DataFrame(schema=RETRIEVAL_SCHEMA)
    entries = pl.DataFrame(out, schema=RETRIEVAL_SCHEMA, orient="row")
    order = pl.col("measure").replace_strict({m: i for i, m in enumerate(MEASURES)}, default=len(MEASURES),
                                             return_dtype=pl.Int8)
    norm = pl.col("norm").replace_strict(_NORM_ORDER, default=len(_NORM_ORDER), return_dtype=pl.Int8)
    return entries.sort(["dataset", "split", "dataset_fp", "metric", "metric_id", order, norm, "norm", "eps"])


def _attacked(rows: pl.DataFrame, measure: str, threat: str) -> list[dict]:
    """Evasion or collision entries: per budget the worst rows where the store has them, else the attack
    rows; each query (pair) at its minimum over the cells that hold it."""
    where = [*_WHERE, "norm", "eps"]
    chosen = (rows.filter(pl.col("kind").is_in(["attack", "worst"]) & (pl.col("threat") == threat))
              .with_columns(_worst=(pl.col("kind") == "worst").any().over(where))
              .filter((pl.col("kind") == "worst") | ~pl.col("_worst")))
    out = []
    for key, group in chosen.group_by(where, maintain_order=True):
        labels = sorted({m for label in group["attack"].unique().to_list() for m in (label or "").split("+") if m})
        per_query = group.group_by("sample_id").agg(pl.col("score").min())
        base = {**dict(zip(where, key)), "kind": group["kind"][0], "attack": "+".join(labels)}
        out.append(_entry(base, measure, group, per_query["score"].drop_nulls()))
    return out


def _entry(base: dict, measure: str, group: pl.DataFrame, values: pl.Series) -> dict:
    values = values.to_numpy().astype(np.float64)
    interval = bootstrap_interval(values)
    return {
        **base, "measure": measure, "n": int(values.size),
        "value": float(100 * values.mean()) if values.size else None,
        "ci_low": None if interval is None else 100 * interval[0],
        "ci_high": None if interval is None else 100 * interval[1],
        "cells": group["cell"].n_unique(),
        "seconds": float(group["seconds"].sum()) if group["seconds"].null_count() < group.height else None,
        "suite_version": ", ".join(sorted({v for v in group["suite_version"].to_list() if v})),
    }


# the tables


@dataclass(frozen=True)
class RetrievalColumn:
    """One column of a retrieval table: a :data:`MEASURES` entry, with its budget for the attacked ones."""

    measure: str
    norm: str = ""
    eps: float = 0.0

    def sort_key(self) -> tuple:
        return (MEASURES.index(self.measure) if self.measure in MEASURES else len(MEASURES),
                _NORM_ORDER.get(self.norm, 9), self.norm, self.eps)

    @property
    def budget(self) -> str:
        """``"ℓ2 0.5"`` (empty for the natural measures)."""
        return f"{fmt_norm(self.norm)} {fmt_eps(self.eps)}" if self.measure not in NATURAL_MEASURES else ""

    @property
    def title(self) -> str:
        return {"evasion": "recall@1 under evasion", "collision": "collision resistance",
                "certified": "certified recall@1"}.get(self.measure, self.measure)

    def text_label(self) -> str:
        """Header of the Markdown table: ``"recall@1"``, ``"evasion ℓ2 0.5"``, ``"cert. ℓ2 0.5"``."""
        if self.measure in NATURAL_MEASURES:
            return self.measure
        short = {"certified": "cert."}.get(self.measure, self.measure)
        return f"{short} {self.budget}"

    def describe(self) -> str:
        return self.title + (f" at {self.budget}" if self.budget else "")


@dataclass
class RetrievalRow:
    """One metric (label and id) of a retrieval table."""

    metric: str
    metric_id: str
    entries: dict[RetrievalColumn, dict] = field(default_factory=dict)

    @property
    def n(self) -> int | None:
        """Queries of the natural recall@1 (else the most of any entry)."""
        natural = self.entries.get(RetrievalColumn("recall@1"))
        if natural is not None:
            return natural["n"]
        return max((e["n"] for e in self.entries.values()), default=None)


@dataclass
class RetrievalTable:
    """The copy-detection table of one (dataset, split, dataset fingerprint)."""

    dataset: str
    split: str
    dataset_fp: str
    columns: list[RetrievalColumn]
    rows: list[RetrievalRow]

    def title(self) -> str:
        return f"{self.dataset} · {self.split}"

    @property
    def smoke(self) -> bool:
        return self.dataset.startswith(SMOKE_PREFIX)

    def explain(self) -> str:
        """The paragraph above the table (plain text)."""
        return explain(self.dataset)


def retrieval_tables(entries: pl.DataFrame | None) -> list[RetrievalTable]:
    """One :class:`RetrievalTable` per (dataset, split, fingerprint) of :func:`retrieval_entries`: one row per
    metric (by natural recall@1, best first, then label), one column per measure and budget (certified
    columns at ε > 0: at ε 0 the certificate asks nothing; a metric without certified rows shows "—")."""
    if entries is None or entries.is_empty():
        return []
    tables = []
    keys = entries.select("dataset", "split", "dataset_fp").unique().sort(["dataset", "split", "dataset_fp"]).rows()
    for dataset, split, fp in keys:
        mine = entries.filter((pl.col("dataset") == dataset) & (pl.col("split") == split)
                              & (pl.col("dataset_fp") == fp))
        rows: dict[tuple[str, str], RetrievalRow] = {}
        for e in mine.iter_rows(named=True):
            row = rows.setdefault((e["metric"], e["metric_id"]), RetrievalRow(e["metric"], e["metric_id"]))
            if e["measure"] in NATURAL_MEASURES:
                column = RetrievalColumn(e["measure"])
            elif e["measure"] == "certified" and e["eps"] == 0:
                continue
            else:
                column = RetrievalColumn(e["measure"], e["norm"], float(e["eps"]))
            row.entries[column] = e
        columns = sorted({c for r in rows.values() for c in r.entries}, key=RetrievalColumn.sort_key)

        def order(row: RetrievalRow) -> tuple:
            recall = row.entries.get(RetrievalColumn("recall@1"))
            value = recall["value"] if recall is not None and recall["value"] is not None else None
            return (value is None, -(value or 0.0), row.metric, row.metric_id)

        tables.append(RetrievalTable(dataset, split, fp, columns, sorted(rows.values(), key=order)))
    return tables


_COPYDAYS = (
    "Copydays (Douze et al., 2009) as published: the 157 originals hidden among 10k distractor images, the 229 "
    "\"strong\" queries (heavily edited copies), scored by mAP; figures from another gallery, query set or "
    "number of distractors (see the dataset options in the provenance) are not comparable to published ones."
)


def explain(dataset: str = "") -> str:
    """What a copy-detection table shows, in one paragraph (plain text); for Copydays, its published protocol."""
    text = (
        "Copy detection: each query is an edited copy (cropped, rescaled, recompressed, recoloured, …) of an "
        "original hidden in a gallery among distractors, and the metric ranks the gallery by its distance to the "
        "query. recall@1 is the share of queries whose nearest gallery item is a true original; mAP the mean over "
        "queries of the average precision of the whole ranking; micro-AP the DISC21 score, one average precision "
        "over every query's top-1 prediction pooled across queries and ordered by distance (it also asks that one "
        "distance threshold serve every query). Under evasion an adversary perturbs the query within ε to push "
        "its original off rank 1 (the worst case over the evasion attacks where the store has it); collision "
        "resistance is the share of (query, target) pairs in which an adversary perturbing the query within ε "
        "could not make a chosen non-matching gallery item its first match. Certified recall@1 counts a query "
        "only when its top-1 match is correct and certified beyond ε: the 2AFC hyperplane certificate applied to "
        "the match against every distractor (the query stays closer to its match than to each other gallery item "
        "for every perturbation of norm below the radius); metrics without a certificate show —. Values in "
        f"percent with their {int(LEVEL * 100)}% interval (bootstrap over queries, {RESAMPLES} resamples; none "
        "for micro-AP)."
    )
    if dataset.lower().startswith("copydays"):
        text += " " + _COPYDAYS
    return text


__all__ = ["COLLISION_THREAT", "MEASURES", "NATURAL_MEASURES", "QUERY_THREAT", "RETRIEVAL", "RETRIEVAL_SCHEMA",
           "RetrievalColumn", "RetrievalRow", "RetrievalTable", "explain", "micro_average_precision",
           "retrieval_entries", "retrieval_tables", "split_tasks"]
