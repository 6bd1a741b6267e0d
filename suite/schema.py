"""The result row: its columns, their types, the evaluation kinds. The store, the evaluator,
the invariants and the leaderboard all import it from here.

One row per sample per cell (per budget for kinds that evaluate several), DESIGN.md "Result row":

- ``metric`` (the config's label), ``metric_id`` (hash of the metric's weights and of every
  option that changes its function), ``dataset``, ``split``;
- ``kind``: one of :data:`KINDS`;
- ``attack``, ``threat`` (``ref`` | ``all``), ``norm`` (``l2`` | ``linf``): ``""`` when none;
- ``eps``: the budget in ``[0, 1]`` image units, ``0.0`` for natural rows;
- ``sample_id``, ``judge`` (the fraction of people who judged x1 closer);
- ``d0``, ``d1``: ``d(ref, x0)`` and ``d(ref, x1)`` on the images the row scores
  (null for ``distance`` rows);
- ``score``: the per-sample 2AFC score (natural, robust, worst-case or certified; null for
  ``distance`` rows);
- ``radius``: the certified radius (``certified`` rows), or the size of the smallest
  perturbation that flipped the sample (``minnorm`` rows; ``inf`` when the attack found
  none up to its ceiling ``eps``); null otherwise;
- ``reached``: ``d(x, x + δ)`` reached by the distance attack, and ``bound``: the
  certified upper bound on it for ``‖δ‖₂ ≤ eps`` (``distance`` rows; ``bound`` is null
  when the metric has no certificate);
- ``bound_alpha`` (optional): how the row's ``bound`` holds, which says which bound it is.
  ``0.0``: exactly, the metric's own Lipschitz certificate (``distance_bound``; rows written
  before this column read null, which means the same). ``α > 0``: with probability at least
  ``1 − α``, center smoothing (Kumar & Goldstein 2021; the distance evaluation's
  ``options.bound = "smoothing"``, the only probabilistic bound). Such a row is about the
  *smoothed* embedding ``f̂``: ``bound`` bounds ``d(f̂(x), f̂(x + δ))`` (the trivial 2 of
  ``1 − cos``, or ``inf`` for ℓ2, where ``f̂(x)`` abstains or ε is too large for its ``n``),
  ``reached`` is ``d(f̂(x), f̂(x_adv))`` at the distance attack's point (null where
  ``f̂(x_adv)`` abstains: no smoothed embedding there), ``passes`` the noisy images both spent;
- ``reached_base`` (optional): the base metric's ``d(x, x_adv)`` at the distance attack's point,
  on every ``distance`` row (equal to ``reached`` except on center-smoothing rows);
- ``seconds``: this sample's share of the wall time of its batch;
- ``passes``: forward passes (images through the metric) the row's evaluation spent on the
  sample, where counted (randomized smoothing); optional: a row without it reads as null;
- ``task``: ``2afc`` or ``retrieval`` (optional: a row without it, as every row written before
  retrieval existed, reads as ``2afc``);
- ``ap``: the query's average precision (``retrieval`` rows, natural and under evasion; optional);
- ``suite_version``, ``cell`` (the key of the cell that wrote the row).

Retrieval rows (one per query, :mod:`suite.evaluate_retrieval`) reuse the columns: ``judge``
is null, ``d0`` is the distance to the query's nearest true match, ``d1`` to its nearest
non-match, ``score`` is 1 when a true match ranks first (recall@1 per query), ``radius`` the
certified radius of that match. Collision rows (attack ``collision``) are about a (query,
target) pair: ``sample_id`` is ``query>target``, ``d0`` the distance to the target, ``d1`` to
the nearest other gallery item, ``score`` 1 while the target is *not* the first match (the
metric resisted).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import polars as pl

from suite.errors import SuiteError

ROW_SCHEMA: dict[str, pl.DataType] = {
    "metric": pl.String,
    "metric_id": pl.String,
    "dataset": pl.String,
    "split": pl.String,
    "kind": pl.String,
    "attack": pl.String,
    "threat": pl.String,
    "norm": pl.String,
    "eps": pl.Float64,
    "sample_id": pl.String,
    "judge": pl.Float64,
    "d0": pl.Float64,
    "d1": pl.Float64,
    "score": pl.Float64,
    "radius": pl.Float64,
    "reached": pl.Float64,
    "bound": pl.Float64,
    "bound_alpha": pl.Float64,
    "reached_base": pl.Float64,
    "seconds": pl.Float64,
    "passes": pl.Float64,
    "task": pl.String,
    "ap": pl.Float64,
    "suite_version": pl.String,
    "cell": pl.String,
}

#: every kind of row; ``worst`` rows are made by the grid from ``attack`` rows
KINDS = ("natural", "attack", "worst", "certified", "distance", "minnorm")

#: kinds a config evaluates cell by cell
EVALUATION_KINDS = ("natural", "attack", "certified", "distance", "minnorm")

#: columns a row may leave out (they read as null)
OPTIONAL = ("passes", "task", "ap", "bound_alpha", "reached_base")

#: columns that identify a row: a null there is a bug in the evaluator, never "no value"
REQUIRED = ("metric", "metric_id", "dataset", "split", "kind", "attack", "threat", "norm", "eps",
            "sample_id", "suite_version", "cell")


def empty_rows() -> pl.DataFrame:
    """A frame with no rows and the columns of :data:`ROW_SCHEMA`."""
    return pl.DataFrame(schema=ROW_SCHEMA)


def validate_rows(rows: pl.DataFrame | Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """Rows as a frame with exactly :data:`ROW_SCHEMA` (column order and dtypes), or a :class:`SuiteError`."""
    if isinstance(rows, pl.DataFrame):
        rows = rows.with_columns(pl.lit(None).alias(c) for c in OPTIONAL if c not in rows.columns)
        _check_columns(rows.columns, where="the frame")
    else:
        rows = [{**{c: None for c in OPTIONAL}, **row} for row in rows]
        for i, row in enumerate(rows):
            _check_columns(row.keys(), where=f"row {i}")
    columns = {}
    for name, dtype in ROW_SCHEMA.items():
        try:
            if isinstance(rows, pl.DataFrame):
                columns[name] = rows[name].cast(dtype, strict=True)
            else:
                columns[name] = pl.Series(name, [row[name] for row in rows], dtype=dtype, strict=True)
        except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError) as err:
            first = str(err).strip().splitlines()[0]
            raise SuiteError(f"result rows: column {name!r} must hold {dtype} values; {first}") from None
    frame = pl.DataFrame(columns)
    for name in REQUIRED:
        nulls = frame[name].null_count()
        if nulls:
            raise SuiteError(f"result rows: column {name!r} has {nulls} null value(s); "
                             "identifying columns take \"\" (eps 0.0) for none")
    for name, dtype in ROW_SCHEMA.items():
        nans = frame[name].is_nan().sum() if dtype == pl.Float64 else 0
        if nans:
            raise SuiteError(f"result rows: column {name!r} has {nans} NaN value(s); use null for \"no value\"")
    bad = sorted(set(frame["kind"].unique().to_list()) - set(KINDS))
    if bad:
        raise SuiteError(f"result rows: column 'kind' must be one of {', '.join(KINDS)}; found {bad}")
    return frame


def _check_columns(found: Iterable[str], where: str) -> None:
    found = list(found)
    missing = [c for c in ROW_SCHEMA if c not in found]
    extra = [c for c in found if c not in ROW_SCHEMA]
    if missing:
        raise SuiteError(f"result rows: {where} lacks column(s) {', '.join(map(repr, missing))} of ROW_SCHEMA")
    if extra:
        raise SuiteError(f"result rows: {where} has column(s) {', '.join(map(repr, extra))} not in ROW_SCHEMA")


__all__ = ["EVALUATION_KINDS", "KINDS", "OPTIONAL", "REQUIRED", "ROW_SCHEMA", "empty_rows", "validate_rows"]
