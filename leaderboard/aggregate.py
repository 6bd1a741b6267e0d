"""Per-sample result rows → one line per evaluated setting, in polars.

The leaderboard is a pure function of the store's rows (suite/schema.py, ROW_SCHEMA):
nothing here recomputes a score, a certificate or a distance.
"""

from __future__ import annotations

import polars as pl

from suite.errors import SuiteError
from suite.schema import KINDS

GROUP = ["metric", "metric_id", "dataset", "split", "kind", "attack", "threat", "norm", "eps"]
"""One leaderboard entry per distinct value of these columns."""

_NEEDED = GROUP + ["sample_id", "score", "radius", "reached", "bound", "seconds", "suite_version", "cell"]

AGG_SCHEMA: dict[str, pl.DataType] = {
    **{name: (pl.Float64 if name == "eps" else pl.String) for name in GROUP},
    "n": pl.Int64,
    "score": pl.Float64,
    "radius_mean": pl.Float64,
    "radius_median": pl.Float64,
    "distance_mean": pl.Float64,
    "bound_mean": pl.Float64,
    "over_bound": pl.Int64,
    "seconds": pl.Float64,
    "cells": pl.Int64,
    "suite_version": pl.String,
}
"""Columns of :func:`aggregate`'s frame (and of ``leaderboard.parquet``)."""

NORM_LABELS = {"l2": "ℓ2", "linf": "ℓ∞", "l1": "ℓ1"}


def aggregate(rows: pl.DataFrame) -> pl.DataFrame:
    """Aggregate per-sample rows by :data:`GROUP`.

    Columns (see :data:`AGG_SCHEMA`):

    - ``n``: number of rows (samples; summed over cells that share the group, e.g. seeds);
    - ``score``: ``100 · mean(score)``, the 2AFC score in percent (null for groups
      whose rows hold no score, such as distance rows);
    - ``radius_mean``, ``radius_median``: of the certified radius, ``certified`` rows only;
    - ``distance_mean``: mean distance ``reached`` by the distance attack, and
      ``bound_mean``: mean certified upper ``bound`` (``distance`` rows only);
    - ``over_bound``: distance rows whose reached distance exceeds their bound
      (must be 0: anything else means a certificate or an attack is wrong);
    - ``seconds``: total wall time; ``cells``: distinct cells; ``suite_version``:
      the suite versions that wrote the rows, comma separated.

    Sorted by dataset, split, metric, kind (natural, attack, worst, certified,
    distance), threat, norm, ε, attack.
    """
    missing = [c for c in _NEEDED if c not in rows.columns]
    if missing:
        raise SuiteError(f"leaderboard: rows lack column(s) {', '.join(missing)}; expected store rows (ROW_SCHEMA)")
    certified = pl.col("kind") == "certified"
    distance = pl.col("kind") == "distance"
    out = rows.group_by(GROUP).agg(
        pl.len().alias("n"),
        (pl.col("score").mean() * 100).alias("score"),
        pl.when(certified).then(pl.col("radius")).mean().alias("radius_mean"),
        pl.when(certified).then(pl.col("radius")).median().alias("radius_median"),
        pl.when(distance).then(pl.col("reached")).mean().alias("distance_mean"),
        pl.when(distance).then(pl.col("bound")).mean().alias("bound_mean"),
        (distance & (pl.col("reached") > pl.col("bound"))).sum().alias("over_bound"),
        pl.col("seconds").sum().alias("seconds"),
        pl.col("cell").n_unique().alias("cells"),
        pl.col("suite_version").unique().sort().str.join(", ").alias("suite_version"),
    )
    out = out.select(pl.col(name).cast(dtype) for name, dtype in AGG_SCHEMA.items())
    return sort_entries(out)


def sort_entries(agg: pl.DataFrame) -> pl.DataFrame:
    """Aggregated entries in reading order (see :func:`aggregate`)."""
    order = pl.col("kind").replace_strict({k: i for i, k in enumerate(KINDS)}, default=len(KINDS),
                                          return_dtype=pl.Int8)
    return agg.sort(["dataset", "split", "metric", "metric_id", order, "kind", "threat", "norm", "eps", "attack"])


def fmt_eps(eps: float) -> str:
    """A budget as people write it: ``0.5`` → ``"0.5"``, ``8/255`` → ``"8/255 (0.0314)"``.

    The ``k/255`` form is shown when ε is within 1e-6 of it and has no short decimal
    form (``0.2`` is ``51/255`` too, but nobody writes it so).
    """
    eps = float(eps)
    if eps == 0:
        return "0"
    if abs(eps - round(eps, 3)) > 1e-9:
        k = round(eps * 255)
        if 0 < k < 255 and abs(eps - k / 255) <= 1e-6:
            return f"{k}/255 ({f'{eps:.4f}'.rstrip('0')})"
    return f"{eps:.4g}"


def fmt_norm(norm: str) -> str:
    """``"l2"`` → ``"ℓ2"``, ``"linf"`` → ``"ℓ∞"``; other names unchanged."""
    return NORM_LABELS.get(norm, norm)


def text_table(rows_or_agg: pl.DataFrame) -> str:
    """A compact plain-text table of the leaderboard (per-sample rows are aggregated first)."""
    agg = aggregate(rows_or_agg) if "sample_id" in rows_or_agg.columns else rows_or_agg
    if agg.is_empty():
        return "(no finished cells)"
    table = agg.select(
        "dataset", "split", "metric", "kind", "attack", "threat",
        pl.col("norm").replace_strict(NORM_LABELS, default=pl.col("norm")).alias("norm"),
        pl.col("eps").map_elements(fmt_eps, return_dtype=pl.String).alias("eps"),
        "n",
        _fixed("score", 2),
        _fixed("radius_median", 4),
        _fixed("distance_mean", 4),
        _fixed("bound_mean", 4),
    )
    table = table.select(c for c in table.columns if table[c].null_count() < table.height).fill_null("—")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=250, fmt_str_lengths=40,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                   tbl_formatting="ASCII_MARKDOWN"):
        return str(table)


def _fixed(column: str, digits: int) -> pl.Expr:
    return pl.col(column).map_elements(lambda v: f"{v:.{digits}f}", return_dtype=pl.String)
