"""Compare the per-sample values of two results folders, e.g. before and after a refactor.

    .venv/bin/python benchmarks/compare_results.py BEFORE_RESULTS AFTER_RESULTS

Rows are matched by what they measure (metric, dataset, split, kind, attack, threat,
norm, ε, sample), not by cell key, since keys change whenever the code's notion of a
cell does. Rows written before ``distance`` rows had their own columns keep the
reached distance in ``d0`` and the bound in ``d1``: they are read as ``reached`` and
``bound``. Prints, per kind, how many rows matched and the largest difference of each
value; exits 1 if a row is missing on either side or any value differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

KEY = ["metric", "dataset", "split", "kind", "attack", "threat", "norm", "eps", "sample_id"]
VALUES = ["judge", "d0", "d1", "score", "radius", "reached", "bound"]


def read_rows(results: Path) -> pl.DataFrame:
    """Every row of every finished cell of a results folder, in the current column layout."""
    files = sorted((results / "cells").glob("*.parquet"))
    if not files:
        raise SystemExit(f"error: {results} holds no cells/*.parquet")
    frames = []
    for path in files:
        frame = pl.read_parquet(path)
        if "reached" not in frame.columns:  # the layout before distance rows had their own columns
            is_distance = pl.col("kind") == "distance"
            frame = frame.with_columns(
                reached=pl.when(is_distance).then(pl.col("d0")),
                bound=pl.when(is_distance).then(pl.col("d1")),
                d0=pl.when(is_distance).then(None).otherwise(pl.col("d0")),
                d1=pl.when(is_distance).then(None).otherwise(pl.col("d1")),
            )
        frames.append(frame.select(*KEY, *(pl.col(v).cast(pl.Float64) for v in VALUES)))
    return pl.concat(frames)


def compare(before: pl.DataFrame, after: pl.DataFrame) -> tuple[pl.DataFrame, int, int, int]:
    """Per-kind table of matched rows and largest absolute differences; counts of unmatched and differing rows."""
    joined = before.join(after, on=KEY, how="full", suffix="_after", coalesce=True)
    missing = joined.filter(pl.col("judge").is_null() | pl.col("judge_after").is_null()).height
    both = joined.filter(pl.col("judge").is_not_null() & pl.col("judge_after").is_not_null())
    differs = pl.any_horizontal(
        (pl.col(v).is_null() != pl.col(f"{v}_after").is_null()) | (pl.col(v) != pl.col(f"{v}_after")).fill_null(False)
        for v in VALUES)
    table = both.group_by("kind").agg(
        pl.len().alias("rows"),
        differs.sum().alias("differing"),
        *((pl.col(v) - pl.col(f"{v}_after")).abs().max().alias(f"max|Δ{v}|") for v in VALUES),
    ).sort("kind")
    return table, missing, int(both.filter(differs).height), both.height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="results folder written first (holds cells/)")
    parser.add_argument("after", type=Path, help="results folder to compare with it")
    args = parser.parse_args(argv)
    before, after = read_rows(args.before), read_rows(args.after)
    table, missing, differing, matched = compare(before, after)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        print(table)
    print(f"rows: {before.height} before, {after.height} after, {matched} matched, "
          f"{missing} on one side only, {differing} with a different value")
    return 0 if missing == 0 and differing == 0 and before.height == after.height else 1


if __name__ == "__main__":
    sys.exit(main())
