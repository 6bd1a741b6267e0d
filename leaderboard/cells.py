"""What the store says about each cell: its rows, its sidecar's spec, and the counts the footer shows.

The per-sample rows do not carry the attack's options or the dataset's fingerprint;
the sidecar spec of the cell that wrote them does (``suite/cell.py``: ``Cell.spec()``).
:func:`describe_cells` turns the specs into one line per cell (:data:`CELL_SCHEMA`) that
the aggregation joins on the ``cell`` column. A worst-case cell's spec lists only its
members (``{"kind": "worst", "members": [...]}``): it inherits the dataset fingerprint
from them, and its setting is the list of its members' settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from leaderboard.formatting import fmt_options
from leaderboard.standards import canonical, setting
from suite.errors import SuiteError
from suite.schema import empty_rows
from suite.store import ResultStore

CELL_SCHEMA: dict[str, pl.DataType] = {
    "cell": pl.String,
    "dataset_fp": pl.String,
    "attack_options": pl.String,
    "options_label": pl.String,
    "standard": pl.Boolean,
    "nonstandard": pl.String,
    "finished_at": pl.String,
}
"""One line per cell: ``attack_options`` is the canonical JSON of the attack's bound options
(worst cells: of the list of their members' settings; ``""`` when the cell has no attack),
``options_label`` what the page shows (options that differ from the defaults),
``standard`` / ``nonstandard`` the verdict of :mod:`leaderboard.standards` and its reasons (joined by
``", "``; a worst case lists its non-standard members as ``"label: reasons"`` joined by ``"; "``)."""

ATTACK_KINDS = ("attack", "distance", "minnorm")


@dataclass
class StoreView:
    """Everything the leaderboard reads from a result store, read once."""

    rows: pl.DataFrame
    cells: pl.DataFrame
    specs: dict[str, dict]
    counts: dict[str, int]
    failures: list[dict] = field(default_factory=list)
    not_evaluated: list[dict] = field(default_factory=list)
    damaged: list[dict] = field(default_factory=list)


def read_store(results_dir: str | Path) -> StoreView:
    """Read a results folder's store: rows of every done cell, their specs and the status counts.

    ``counts``: ``done`` (evaluated cells), ``worst`` (worst-case cells derived from them),
    ``failed``, ``not_evaluated``, ``missing`` (a sidecar without verified rows: an
    interrupted or damaged write, recomputed by the next run) and ``rows``. ``damaged``
    lists the cells whose sidecar says done but whose rows do not verify, with the store's
    reason (``ResultStore.check``).
    """
    store = ResultStore(results_dir)
    frames, specs, finished, damaged = [], {}, {}, []
    counts = {"done": 0, "worst": 0, "failed": 0, "not_evaluated": 0, "missing": 0, "rows": 0}
    for key in store.keys():
        meta = _sidecar(store.json_path(key))
        spec = meta.get("spec") if isinstance(meta.get("spec"), dict) else {}
        try:
            rows = store.read(key)
        except SuiteError:
            state, problem = _check(store, key)
            counts[{"failed": "failed", "not-evaluated": "not_evaluated"}.get(state, "missing")] += 1
            if state == "missing" and problem:
                damaged.append({"key": key, "spec": spec, "problem": problem, "finished_at": meta.get("finished_at")})
            continue
        frames.append(rows)
        specs[key], finished[key] = spec, meta.get("finished_at")
        counts["worst" if spec.get("kind") == "worst" else "done"] += 1
        counts["rows"] += rows.height
    rows = pl.concat(frames, how="vertical") if frames else empty_rows()
    return StoreView(rows=rows, cells=describe_cells(specs, finished), specs=specs, counts=counts,
                     failures=store.failures(), not_evaluated=store.not_evaluated(), damaged=damaged)


def _check(store: ResultStore, key: str) -> tuple[str, str | None]:
    """The store's status of ``key`` and, for a damaged done cell, what is wrong with it."""
    check = getattr(store, "check", None)
    return check(key) if check is not None else (store.status(key), None)


def describe_cells(specs: dict[str, dict], finished: dict[str, str | None] | None = None) -> pl.DataFrame:
    """One line of :data:`CELL_SCHEMA` per cell key of ``specs`` (sidecar specs, see the module docstring)."""
    finished = finished or {}
    own = {key: _own(spec) for key, spec in specs.items() if spec.get("kind") != "worst"}
    lines = []
    for key, spec in specs.items():
        line = own.get(key) or _worst(spec, specs, own)
        lines.append({"cell": key, **line, "finished_at": finished.get(key)})
    return pl.DataFrame(lines, schema=CELL_SCHEMA, orient="row") if lines else pl.DataFrame(schema=CELL_SCHEMA)


def _own(spec: dict) -> dict[str, Any]:
    fp = str(spec.get("dataset_fp") or "")
    if spec.get("kind") == "certified" and spec.get("attack_name"):  # randomized smoothing: its options as set
        options = json.dumps(spec.get("attack_options") or {}, sort_keys=True)
        label = ", ".join(f"{k}={v}" for k, v in sorted((spec.get("attack_options") or {}).items()))
        return {"dataset_fp": fp, "attack_options": options, "options_label": label, "standard": None,
                "nonstandard": ""}
    if spec.get("kind") not in ATTACK_KINDS:
        return {"dataset_fp": fp, "attack_options": "", "options_label": "", "standard": None, "nonstandard": ""}
    options, bound = spec.get("attack_options"), {}
    if spec.get("kind") == "distance":  # the options of its bound are not the attack's (suite/config.py)
        from suite.config import split_distance_options

        options, bound = split_distance_options(options)
    found = setting(str(spec.get("attack_name") or spec.get("attack") or ""), options)
    label = fmt_options(found.changed) if found.changed else "defaults"
    if bound:  # center smoothing: another bound, another entry
        key = canonical({**found.options, **bound})
        label += "; center-smoothing bound: " + fmt_options({k: v for k, v in bound.items() if k != "bound"})
    else:
        key = found.key()
    return {"dataset_fp": fp, "attack_options": key, "options_label": label,
            "standard": found.standard, "nonstandard": ", ".join(found.weaker)}


def _worst(spec: dict, specs: dict[str, dict], own: dict[str, dict]) -> dict[str, Any]:
    """A worst-case cell's line, inherited from its members (unknown members leave it unknown)."""
    members = [m for m in spec.get("members") or [] if m in own]
    if not members or len(members) != len(spec.get("members") or []):
        return {"dataset_fp": str(spec.get("dataset_fp") or ""), "attack_options": "", "options_label": "",
                "standard": None, "nonstandard": ""}
    fps = {own[m]["dataset_fp"] for m in members}
    parts = sorted(((str(specs[m].get("attack", "")), own[m]) for m in members),
                   key=lambda part: (part[0], part[1]["attack_options"]))
    settings = [{"attack": label, "options": json.loads(line["attack_options"] or "{}")} for label, line in parts]
    verdicts = [line["standard"] for _, line in parts]
    standard = True if any(v is True for v in verdicts) else (None if None in verdicts else False)
    return {
        "dataset_fp": fps.pop() if len(fps) == 1 else "",
        "attack_options": canonical(settings),
        "options_label": " + ".join(
            label + (f" ({line['options_label']})" if line["options_label"] not in ("", "defaults") else "")
            for label, line in parts),
        "standard": standard,
        "nonstandard": "; ".join(f"{label}: {line['nonstandard']}" for label, line in parts if line["nonstandard"]),
    }


def _sidecar(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


__all__ = ["ATTACK_KINDS", "CELL_SCHEMA", "StoreView", "describe_cells", "read_store"]
