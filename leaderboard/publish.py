"""Build the leaderboard files of a results folder from its result store."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import suite
from leaderboard.aggregate import aggregate
from leaderboard.html import render
from suite.errors import SuiteError
from suite.atomic import atomic_write
from suite.store import ResultStore


def build(results_dir: str | Path) -> tuple[Path, Path]:
    """Write ``results_dir/leaderboard.parquet`` (the aggregated entries) and
    ``results_dir/leaderboard.html`` from ``ResultStore(results_dir)``; returns both paths.

    Each file is written to a temporary name and moved into place, so a reader never
    sees half a page. Failed cells are listed on the page, not aggregated.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise SuiteError(f"results folder {str(results_dir)!r} does not exist: run a benchmark config first")
    store = ResultStore(results_dir)
    agg = aggregate(store.read_all())
    generated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    page = render(agg, store.failures(), generated_at=generated_at, generator=suite.__version__,
                  not_evaluated=store.not_evaluated())
    parquet_path = results_dir / "leaderboard.parquet"
    html_path = results_dir / "leaderboard.html"
    atomic_write(parquet_path, agg.write_parquet)
    atomic_write(html_path, page.encode("utf-8"))
    return parquet_path, html_path
