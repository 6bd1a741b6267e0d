"""The leaderboard: polars aggregation of the store's per-sample rows, a static HTML page and its companions.

``python -m leaderboard RESULTS_DIR [--out FILE]`` (or ``lipsim leaderboard``) writes
``leaderboard.html`` and, next to it, ``.parquet``, ``.csv``, ``.json`` and ``.md``.
"""

from leaderboard.aggregate import AGG_SCHEMA, GROUP, aggregate, text_table
from leaderboard.cells import describe_cells, read_store
from leaderboard.formatting import fmt_eps, fmt_norm
from leaderboard.html import Context, render
from leaderboard.markdown import markdown
from leaderboard.publish import build
from leaderboard.retrieval import RETRIEVAL_SCHEMA, retrieval_entries, split_tasks

__all__ = ["AGG_SCHEMA", "GROUP", "RETRIEVAL_SCHEMA", "Context", "aggregate", "build", "describe_cells", "fmt_eps",
           "fmt_norm", "markdown", "read_store", "render", "retrieval_entries", "split_tasks", "text_table"]
