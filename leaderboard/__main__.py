"""``python -m leaderboard RESULTS_DIR``: build the leaderboard files and print a text table."""

from __future__ import annotations

import argparse
import sys

import polars as pl

from leaderboard.aggregate import text_table
from leaderboard.publish import build
from suite.errors import SuiteError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard", description=__doc__)
    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="a results folder holding a result store (cells/)")
    args = parser.parse_args(argv)
    try:
        parquet_path, html_path = build(args.results_dir)
    except SuiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {parquet_path}")
    print(f"wrote {html_path}")
    print(text_table(pl.read_parquet(parquet_path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
