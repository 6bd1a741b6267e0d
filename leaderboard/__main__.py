"""``python -m leaderboard RESULTS_DIR [--out FILE]``: build the leaderboard files and print a compact table."""

from __future__ import annotations

import argparse
import sys

import polars as pl

from leaderboard.aggregate import text_table
from leaderboard.publish import COMPANIONS, build, damaged_warnings, retrieval_csv_path
from suite.errors import SuiteError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard", description=__doc__)
    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="a results folder holding a result store (cells/)")
    parser.add_argument("--out", metavar="FILE",
                        help="the page to write (default RESULTS_DIR/leaderboard.html); its companions "
                             f"({', '.join(COMPANIONS)}) take the same name")
    args = parser.parse_args(argv)
    try:
        parquet_path, html_path = build(args.results_dir, args.out)
    except SuiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in damaged_warnings(html_path):
        print(line, file=sys.stderr)
    print(f"wrote {html_path}")
    print(f"wrote {', '.join(str(html_path.with_suffix(s)) for s in COMPANIONS)}")
    if retrieval_csv_path(html_path).is_file():
        print(f"wrote {retrieval_csv_path(html_path)} (copy detection)")
    print(text_table(pl.read_parquet(parquet_path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
