"""Build the leaderboard files of a results folder from its result store."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import suite
from leaderboard.aggregate import aggregate
from leaderboard.html import render
from suite.errors import SuiteError
from suite.store import ResultStore, temp_path


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
    page = render(agg, store.failures(), generated_at=generated_at, generator=suite.__version__)
    parquet_path = results_dir / "leaderboard.parquet"
    html_path = results_dir / "leaderboard.html"
    _atomic(parquet_path, agg.write_parquet)
    _atomic(html_path, lambda fh: fh.write(page.encode("utf-8")))
    return parquet_path, html_path


def _atomic(final: Path, write) -> None:
    tmp = temp_path(final)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
