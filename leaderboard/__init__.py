"""The leaderboard: polars aggregation of the store's per-sample rows, and a static HTML page.

``python -m leaderboard RESULTS_DIR`` writes ``leaderboard.parquet`` and ``leaderboard.html``
into the results folder.
"""

from leaderboard.aggregate import AGG_SCHEMA, GROUP, aggregate, fmt_eps, text_table
from leaderboard.html import render
from leaderboard.publish import build

__all__ = ["AGG_SCHEMA", "GROUP", "aggregate", "build", "fmt_eps", "render", "text_table"]
