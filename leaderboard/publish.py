"""Build the leaderboard files of a results folder from its result store.

Next to the page (``leaderboard.html``) go its companions, named after it: the aggregated
entries as ``.parquet``, ``.csv`` and ``.json`` (the JSON adds the counts, provenance and
published matches), and the headline tables as Markdown (``.md``). Retrieval rows (copy
detection, :mod:`leaderboard.retrieval`) stay out of the 2AFC entries: their table is a section
of the page and of the Markdown, the JSON's ``retrieval`` list and ``<page>.retrieval.csv``
(written only when the store holds retrieval rows). Every file is written by
:func:`suite.atomic.atomic_write`, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

import suite
from leaderboard.aggregate import aggregate
from leaderboard.cells import StoreView, read_store
from leaderboard.html import Context, render
from leaderboard.markdown import markdown
from leaderboard.provenance import datasets_provenance, git_commit, metrics_provenance
from leaderboard.published import PUBLISHED_PATH, load_published
from leaderboard.retrieval import retrieval_entries, split_tasks
from suite.atomic import atomic_write
from suite.errors import SuiteError

#: suffixes of the files :func:`build` writes, next to the page
COMPANIONS = (".parquet", ".csv", ".json", ".md")

#: suffix of the copy-detection entries' CSV (:data:`leaderboard.retrieval.RETRIEVAL_SCHEMA`), written next to
#: the page only when the store holds retrieval rows
RETRIEVAL_CSV = ".retrieval.csv"


def retrieval_csv_path(html_path: Path) -> Path:
    """Where :func:`build` writes the copy-detection entries for the page ``html_path``."""
    return html_path.with_name(html_path.stem + RETRIEVAL_CSV)


def build(results_dir: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """Write the leaderboard of ``ResultStore(results_dir)``; returns ``(parquet path, html path)``.

    ``out`` is the page's path (default ``results_dir/leaderboard.html``); the companions
    take its name with their own suffix. Failed and not-evaluated cells are listed on the
    page, not aggregated.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise SuiteError(f"results folder {str(results_dir)!r} does not exist: run a benchmark config first")
    html_path = Path(out) if out is not None else results_dir / "leaderboard.html"
    if html_path.suffix.lower() not in (".html", ".htm"):
        raise SuiteError(f"--out must name an .html file (its companions take the same name); got {str(html_path)!r}")
    view = read_store(results_dir)
    twoafc, retrieval_rows = split_tasks(view.rows)
    agg = aggregate(twoafc, view.cells)
    retrieval = retrieval_entries(retrieval_rows, view.cells)
    generated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    context = Context(
        damaged=view.damaged, counts=view.counts, metrics=metrics_provenance(view.specs),
        datasets=datasets_provenance(view.specs),
        evaluations=evaluations(view), published=load_published(PUBLISHED_PATH) if PUBLISHED_PATH.is_file() else [],
        commit=git_commit(), results=str(results_dir), retrieval=retrieval,
    )
    page = render(agg, view.failures, generated_at=generated_at, generator=suite.__version__,
                  not_evaluated=view.not_evaluated, context=context)
    paths = {suffix: html_path.with_suffix(suffix) for suffix in COMPANIONS}
    atomic_write(paths[".parquet"], agg.write_parquet)
    atomic_write(paths[".csv"], agg.write_csv)
    atomic_write(paths[".json"], _json(agg, view, context, generated_at).encode("utf-8"))
    atomic_write(paths[".md"], markdown(agg, generated_at=generated_at, generator=suite.__version__,
                                        retrieval=retrieval).encode("utf-8"))
    copies = retrieval_csv_path(html_path)
    if not retrieval.is_empty():
        atomic_write(copies, retrieval.write_csv)
    elif copies.is_file():  # a copy-detection table from an earlier build would disagree with this page
        copies.unlink()
    atomic_write(html_path, page.encode("utf-8"))
    return paths[".parquet"], html_path


def evaluations(view: StoreView) -> list[dict[str, Any]]:
    """One record per distinct attack setting in the store (label, kind, options as run, verdict, cells, dates)."""
    cells = view.cells.filter(pl.col("attack_options") != "")
    records: dict[tuple, dict[str, Any]] = {}
    for line in cells.iter_rows(named=True):
        spec = view.specs.get(line["cell"], {})
        if spec.get("kind") == "worst":
            continue
        key = (str(spec.get("attack", "")), str(spec.get("kind", "")), line["attack_options"])
        record = records.setdefault(key, {
            "attack": key[0], "kind": key[1], "name": str(spec.get("attack_name") or key[0]),
            "options": json.loads(line["attack_options"]), "standard": line["standard"],
            "nonstandard": line["nonstandard"], "cells": 0, "first": None, "last": None, "versions": set()})
        record["cells"] += 1
        when = line["finished_at"]
        if when:
            record["first"] = min(filter(None, [record["first"], when]))
            record["last"] = max(filter(None, [record["last"], when]))
        record["versions"].add(str(spec.get("suite_version", "")))
    out = []
    for key in sorted(records):
        record = records[key]
        record["suite_version"] = ", ".join(sorted(v for v in record.pop("versions") if v))
        out.append(record)
    return out


def _json(agg: pl.DataFrame, view: StoreView, context: Context, generated_at: str) -> str:
    entries = [{k: _finite(v) for k, v in row.items()} for row in agg.iter_rows(named=True)]
    data = {
        "generated_at": generated_at,
        "generator": suite.__version__,
        "commit": context.commit,
        "results": context.results,
        "counts": view.counts,
        "entries": entries,
        "retrieval": [{k: _finite(v) for k, v in row.items()}
                      for row in (context.retrieval.iter_rows(named=True) if context.retrieval is not None else [])],
        "metrics": list(context.metrics.values()),
        "datasets": [{"dataset": d, "split": s, "dataset_fp": fp, **v} for (d, s, fp), v in context.datasets.items()],
        "attacks": context.evaluations,
        "failed": [{"key": f["key"], "spec": f["spec"], "error": f["error"], "finished_at": f["finished_at"]}
                   for f in view.failures],
        "not_evaluated": [{"key": f["key"], "spec": f["spec"], "reason": f["error"]} for f in view.not_evaluated],
        "damaged": view.damaged,
    }
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False, default=str) + "\n"


def damaged_warnings(html_path: str | Path) -> list[str]:
    """One ``warning: …`` line per cell of the page's store that does not verify (read from the page's JSON
    companion): the page leaves those cells out, and the next ``lipsim run`` computes them again."""
    data = json.loads(Path(html_path).with_suffix(".json").read_text(encoding="utf-8"))
    lines = []
    for cell in data.get("damaged", []):
        spec = cell.get("spec") or {}
        what = " ".join(str(spec[k]) for k in ("metric", "dataset", "split", "kind", "attack") if spec.get(k))
        lines.append(f"warning: damaged cell {cell.get('key')} ({what or 'unknown spec'}): {cell.get('problem')}; "
                     "left out of the page (rerun `lipsim run` on this config to compute it again)")
    return lines


def _finite(value: Any) -> Any:
    """JSON has no infinity: an infinite radius (no flip found) is written as the string ``"inf"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "-inf" if value < 0 else None
    return value


__all__ = ["COMPANIONS", "RETRIEVAL_CSV", "build", "evaluations", "retrieval_csv_path"]
