"""Per-sample result rows → one entry per evaluated setting, in polars.

The leaderboard is a pure function of the store's rows (suite/schema.py, ROW_SCHEMA) and of
what the cells' sidecars say about them (leaderboard/cells.py): nothing here recomputes a
score, a certificate or a distance. Entries never merge different evaluations: the key
(:data:`GROUP`) holds the attack's options and the dataset's fingerprint, so two runs of one
attack with different options are two entries, while repeated runs of one setting (seeds)
pool their samples.
"""

from __future__ import annotations

import json

import polars as pl

from leaderboard.cells import CELL_SCHEMA
from leaderboard.formatting import fmt_eps, fmt_norm, fmt_num
from leaderboard.headline import headline_tables
from leaderboard.intervals import bootstrap_interval
from leaderboard.retrieval import split_tasks
from leaderboard.standards import canonical
from suite.errors import SuiteError
from suite.invariants import exceeds_bound, probabilistic_bound
from suite.schema import KINDS

GROUP = ["metric", "metric_id", "dataset", "dataset_fp", "split", "kind", "attack", "attack_options",
         "threat", "norm", "eps"]
"""One leaderboard entry per distinct value of these columns."""

_NEEDED = ["metric", "metric_id", "dataset", "split", "kind", "attack", "threat", "norm", "eps",
           "sample_id", "score", "radius", "reached", "bound", "seconds", "suite_version", "cell"]

_SETTING = ["options_label", "standard", "nonstandard"]

AGG_SCHEMA: dict[str, pl.DataType] = {
    **{name: (pl.Float64 if name == "eps" else pl.String) for name in GROUP},
    "options_label": pl.String,
    "standard": pl.Boolean,
    "nonstandard": pl.String,
    "headline": pl.Boolean,
    "n": pl.Int64,
    "score": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "radius_mean": pl.Float64,
    "radius_median": pl.Float64,
    "flipped": pl.Int64,
    "tightness": pl.Float64,
    "distance_mean": pl.Float64,
    "distance_max": pl.Float64,
    "bound_mean": pl.Float64,
    "over_bound": pl.Int64,
    "over_bound_roundoff": pl.Int64,
    "seconds": pl.Float64,
    "cells": pl.Int64,
    "suite_version": pl.String,
    "finished_at": pl.String,
}
"""Columns of :func:`aggregate`'s frame (and of ``leaderboard.parquet``, ``.csv``, ``.json``)."""

#: the entries that make the headline table: natural, and under threat ``ref`` the worst case and the certificate
HEADLINE_THREAT = "ref"


def aggregate(rows: pl.DataFrame, cells: pl.DataFrame | None = None) -> pl.DataFrame:
    """Aggregate per-sample 2AFC rows by :data:`GROUP`; ``cells``: :func:`leaderboard.cells.describe_cells`
    of the cells that wrote them (without it, options and fingerprints are unknown: ``""``). Retrieval
    rows among ``rows`` are left out here (:func:`leaderboard.retrieval.split_tasks`, the one place that
    tells the tasks apart) and aggregated by :func:`leaderboard.retrieval.retrieval_entries`.

    Columns (see :data:`AGG_SCHEMA`):

    - ``attack_options``: canonical JSON of the attack's options, defaults filled in
      (worst case: the list of its members' settings); ``options_label`` the options
      that differ from the defaults; ``standard`` whether the evaluation reaches the
      attack's reference setting (null: no attack, or unknown), ``nonstandard`` why not
      (leaderboard/standards.py);
    - ``headline``: the entry belongs in the headline table (natural; threat ``ref``
      worst case and certified score);
    - ``n``: number of samples (summed over cells that share the setting, e.g. seeds;
      for a worst case, distinct samples, each at its minimum over every cell);
    - ``score``: ``100 · mean(score)``, the 2AFC score in percent, and ``ci_low``,
      ``ci_high`` its 95% bootstrap interval (leaderboard/intervals.py); null for rows
      without a score (distance, minimal radius);
    - ``radius_mean``, ``radius_median``: of the certified radius (``certified``);
      ``radius_median`` and ``flipped`` (samples flipped within the ceiling ε) of the
      minimal adversarial radius (``minnorm``); ``tightness``: for ``minnorm`` entries of a
      certifiable metric, the median over samples of certified radius / minimal adversarial
      radius (same sample and threat; samples with a finite minimal radius): how much of the
      real robustness the metric's own certificate proves;
    - ``distance_mean``, ``distance_max``: distance ``reached`` by the distance attack,
      ``bound_mean``: mean certified upper ``bound`` (``distance`` rows only);
    - ``over_bound``: distance rows whose reached distance exceeds their exact bound by more
      than float round-off (:func:`suite.invariants.exceeds_bound`; must be 0: anything
      else means a certificate or an attack is wrong), ``over_bound_roundoff``: those
      above it by no more than round-off. A center-smoothing bound (``bound_alpha > 0``)
      may fail on a fraction α of the rows by design: its rows are counted in neither, and
      :func:`suite.invariants.check_invariants` tests their count per cell;
    - ``seconds``: total wall time; ``cells``: distinct cells; ``suite_version``: the
      suite versions that wrote the rows, comma separated; ``finished_at``: when the
      last of its cells finished.

    A worst case over the same (metric, dataset, split, threat, norm, ε) stored by more
    than one ensemble (two runs with different attack options) gets one more entry, the
    per-sample minimum over all of them, which is the headline one.

    Sorted by dataset, split, metric, kind (natural, attack, worst, certified,
    distance, minnorm), threat, norm, ε, attack.
    """
    missing = [c for c in _NEEDED if c not in rows.columns]
    if missing:
        raise SuiteError(f"leaderboard: rows lack column(s) {', '.join(missing)}; expected store rows (ROW_SCHEMA)")
    rows, _ = split_tasks(rows)  # 2AFC only: retrieval rows have their own table (leaderboard/retrieval.py)
    if "bound_alpha" not in rows.columns:  # rows from before the column: every bound is exact
        rows = rows.with_columns(bound_alpha=pl.lit(None, dtype=pl.Float64))
    rows = _with_tightness(_with_cells(rows.select(*_NEEDED, "bound_alpha"), cells))
    cost = rows.group_by(GROUP).agg(
        pl.col("seconds").sum().alias("seconds"),
        pl.col("cell").n_unique().alias("cells"),
        pl.col("suite_version").unique().sort().str.join(", ").alias("suite_version"),
        pl.col("finished_at").max().alias("finished_at"),
    )
    rows = _per_sample_minimum(rows)
    union, union_cost = _union_of_ensembles(rows)
    if union.height:
        rows = pl.concat([rows, union], how="vertical_relaxed")
        cost = pl.concat([cost, union_cost], how="vertical_relaxed")
    certified = pl.col("kind") == "certified"
    distance = pl.col("kind") == "distance"
    exact = distance & ~probabilistic_bound()
    minnorm = pl.col("kind") == "minnorm"
    out = rows.group_by(GROUP).agg(
        *(pl.col(c).first() for c in _SETTING),
        pl.col("_headline").first().alias("headline"),
        pl.len().alias("n"),
        (pl.col("score").mean() * 100).alias("score"),
        pl.col("score").drop_nulls().alias("_scores"),
        pl.when(certified).then(pl.col("radius")).mean().alias("radius_mean"),
        pl.when(certified | minnorm).then(pl.col("radius")).median().alias("radius_median"),
        (minnorm & pl.col("radius").is_finite().fill_null(False)).sum().alias("flipped"),
        pl.when(minnorm).then(pl.col("_ratio")).median().alias("tightness"),
        pl.when(distance).then(pl.col("reached")).mean().alias("distance_mean"),
        pl.when(distance).then(pl.col("reached")).max().alias("distance_max"),
        pl.when(distance).then(pl.col("bound")).mean().alias("bound_mean"),
        (exact & exceeds_bound()).sum().alias("over_bound"),
        (exact & (pl.col("reached") > pl.col("bound")).fill_null(False) & ~exceeds_bound())
        .sum().alias("over_bound_roundoff"),
    ).join(cost, on=GROUP, how="left")
    intervals = [bootstrap_interval(scores) for scores in out["_scores"].to_list()]
    out = out.with_columns(
        ci_low=pl.Series([None if i is None else 100 * i[0] for i in intervals], dtype=pl.Float64),
        ci_high=pl.Series([None if i is None else 100 * i[1] for i in intervals], dtype=pl.Float64),
    )
    out = out.with_columns(headline=_headline(out),
                           flipped=pl.when(pl.col("kind") == "minnorm").then(pl.col("flipped")))
    out = out.select(pl.col(name).cast(dtype) for name, dtype in AGG_SCHEMA.items())
    return sort_entries(out)


def _with_tightness(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows with ``_ratio`` = certified radius / minimal adversarial radius on ``minnorm`` rows (ℓ2).

    The certified radius is the metric's own (Lipschitz) certificate of the same sample under
    the same threat: ``certified`` rows without an attack label (randomized smoothing's rows
    carry one and certify another function, the smoothed decision).
    """
    keys = ["metric", "metric_id", "dataset", "split", "sample_id", "threat"]
    own = rows.filter((pl.col("kind") == "certified") & (pl.col("attack") == "")).group_by(keys).agg(
        pl.col("radius").min().alias("_certified"))
    ratio = (pl.when((pl.col("kind") == "minnorm") & (pl.col("norm") == "l2") & pl.col("radius").is_finite()
                     & (pl.col("radius") > 0))
             .then(pl.col("_certified") / pl.col("radius")))
    return rows.join(own, on=keys, how="left").with_columns(_ratio=ratio).drop("_certified")


def _with_cells(rows: pl.DataFrame, cells: pl.DataFrame | None) -> pl.DataFrame:
    """Rows with their cell's line of :data:`leaderboard.cells.CELL_SCHEMA` (unknown cells: ``""``/null)."""
    if cells is None:
        cells = pl.DataFrame(schema=CELL_SCHEMA)
    rows = rows.join(cells.select(list(CELL_SCHEMA)), on="cell", how="left")
    return rows.with_columns(
        pl.col("dataset_fp", "attack_options", "options_label", "nonstandard").fill_null(""),
        _headline=pl.lit(None, dtype=pl.Boolean),
    )


def _per_sample_minimum(rows: pl.DataFrame) -> pl.DataFrame:
    """Worst-case rows reduced to one per sample and setting (its minimum over every cell that holds it)."""
    worst = pl.col("kind") == "worst"
    reduced = (rows.filter(worst).sort(["score", "cell"], nulls_last=True)
               .unique(subset=[*GROUP, "sample_id"], keep="first", maintain_order=True))
    return pl.concat([rows.filter(~worst), reduced], how="vertical")


def _union_of_ensembles(rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Where one (metric, dataset, split, threat, norm, ε) has worst cases of several ensembles, their
    per-sample minimum as one more entry (marked headline) and its cost; empty frames otherwise."""
    where = ["metric", "metric_id", "dataset", "dataset_fp", "split", "threat", "norm", "eps"]
    worst = rows.filter(pl.col("kind") == "worst")
    several = (worst.group_by(where).agg(pl.struct("attack", "attack_options").n_unique().alias("_ensembles"))
               .filter(pl.col("_ensembles") > 1))
    if several.is_empty():
        return rows.clear(), pl.DataFrame()
    parts = worst.join(several.drop("_ensembles"), on=where, how="semi")
    labels = {}
    for key, group in parts.group_by(where, maintain_order=True):
        ensembles = group.unique(subset=["attack", "attack_options"], maintain_order=True)
        members = sorted({m for label in ensembles["attack"] for m in label.split("+") if m})
        settings = sorted({canonical(s) for opts in ensembles["attack_options"] for s in _settings(opts)})
        verdicts = ensembles["standard"].to_list()
        labels[key] = {
            "attack": "+".join(members),
            "attack_options": canonical({"union": [json.loads(s) for s in settings]}),
            "options_label": " + ".join(sorted({p for lab in ensembles["options_label"] for p in lab.split(" + ")
                                                if p})),
            "standard": True if True in verdicts else (None if None in verdicts else False),
            "nonstandard": "; ".join(sorted({p for why in ensembles["nonstandard"] for p in why.split("; ") if p})),
        }
    keyed = pl.DataFrame([{**dict(zip(where, key)), **value} for key, value in labels.items()],
                         schema={**{c: rows.schema[c] for c in where}, "attack": pl.String,
                                 "attack_options": pl.String, "options_label": pl.String, "standard": pl.Boolean,
                                 "nonstandard": pl.String})
    union_all = parts.drop("attack", "attack_options", *_SETTING).join(keyed, on=where, how="left")
    cost = union_all.with_columns(_headline=pl.lit(True)).group_by(GROUP).agg(
        pl.col("seconds").sum().alias("seconds"),
        pl.col("cell").n_unique().alias("cells"),
        pl.col("suite_version").unique().sort().str.join(", ").alias("suite_version"),
        pl.col("finished_at").max().alias("finished_at"),
    )
    union = (union_all.sort(["score", "cell"], nulls_last=True)
             .unique(subset=[*where, "sample_id"], keep="first", maintain_order=True)
             .with_columns(_headline=pl.lit(True))
             .select(rows.columns))
    return union, cost


def _settings(attack_options: str) -> list:
    """The member settings a worst-case entry's ``attack_options`` lists (``[]`` when unknown)."""
    if not attack_options:
        return []
    value = json.loads(attack_options)
    return value.get("union", []) if isinstance(value, dict) else list(value)


def _headline(out: pl.DataFrame) -> pl.Expr:
    """Natural entries, and under threat ``ref`` the metric's own (Lipschitz) certified entries and the one
    worst case per setting (an ensemble's own, or the union of several)."""
    where = ["metric", "metric_id", "dataset", "dataset_fp", "split", "threat", "norm", "eps"]
    ensembles = pl.len().over([*where, "kind"])
    ref = pl.col("threat") == HEADLINE_THREAT
    worst = (pl.col("kind") == "worst") & ref & (pl.col("headline").fill_null(False) | (ensembles == 1))
    # the metric's own certificate; randomized smoothing certifies another function (the smoothed
    # decision) and has its own rows in the details
    own = (pl.col("kind") == "certified") & (pl.col("attack") == "") & ref
    return (pl.col("kind") == "natural") | own | worst


def sort_entries(agg: pl.DataFrame) -> pl.DataFrame:
    """Aggregated entries in reading order (see :func:`aggregate`)."""
    order = pl.col("kind").replace_strict({k: i for i, k in enumerate(KINDS)}, default=len(KINDS),
                                          return_dtype=pl.Int8)
    return agg.sort(["dataset", "split", "dataset_fp", "metric", "metric_id", order, "kind", "threat", "norm", "eps",
                     "attack", "attack_options"])


def text_table(rows_or_agg: pl.DataFrame) -> str:
    """A compact plain-text table: one line per (dataset, split, metric), one column per headline
    setting (natural, worst case and certified score under threat ``ref`` at each ε), then n.

    Per-sample rows are aggregated first (without the cells' specs).
    """
    agg = aggregate(rows_or_agg) if "sample_id" in rows_or_agg.columns else rows_or_agg
    if agg.is_empty():
        return "(no finished cells)"
    blocks = []
    for table in headline_tables(agg):
        header = ["metric", "rank", *(c.text_label() for c in table.columns), "n"]
        lines = [[row.metric, str(row.rank or "—"),
                  *(fmt_num(row.entries[c]["score"], 2) if c in row.entries else "—" for c in table.columns),
                  str(row.n or "—")] for row in table.rows]
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
        fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
        blocks.append("\n".join([f"{table.title()}", fmt(header), fmt(["-" * w for w in widths]),
                                 *map(fmt, lines)]))
    return "\n\n".join(blocks)


__all__ = ["AGG_SCHEMA", "GROUP", "HEADLINE_THREAT", "aggregate", "fmt_eps", "fmt_norm", "sort_entries", "text_table"]
