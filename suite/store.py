"""The result store: one parquet file of per-sample rows per finished cell.

Layout under the store's root::

    cells/<key>.parquet   the cell's rows, columns exactly ROW_SCHEMA
    cells/<key>.json      {"spec": ..., "status": "done"|"failed", "error": str|None,
                           "rows": n, "finished_at": ISO 8601 UTC time}

``<key>`` is :func:`cell_key` of the cell's full specification (metric weights' hash
included), so rerunning a config finds the cells it already finished.

**Row columns** (one row per sample per cell, DESIGN.md "Result row"):

- ``metric`` (metric name), ``metric_id`` (hash of its weights), ``dataset``, ``split``;
- ``kind``: ``natural`` | ``attack`` | ``worst`` | ``certified`` | ``distance``;
- ``attack``, ``threat`` (``ref`` | ``all``), ``norm`` (``l2`` | ``linf``): ``""`` when none;
- ``eps``: the budget in ``[0, 1]`` image units, ``0.0`` for natural rows;
- ``sample_id``, ``judge`` (fraction of people who judged x1 closer);
- ``d0``, ``d1``: ``d(ref, x0)`` and ``d(ref, x1)`` on the images the row scores.
  **For ``distance`` rows they mean something else**: ``d0`` is the distance
  ``d(x, x + δ)`` the distance attack reached and ``d1`` the certified upper bound on
  it for ``‖δ‖ ≤ eps`` (null when the metric is not certifiable);
- ``score``: the per-sample 2AFC score (robust, worst-case or certified for those kinds);
- ``radius``: the certified radius (null when none);
- ``seconds``: this sample's share of the cell's wall time;
- ``suite_version``, ``cell`` (the cell key, equal to the file's key).

**Crash safety.** Every file is written to a temporary file named ``.tmp-…`` in the
same folder, then moved into place with ``os.replace`` (atomic on POSIX). A write
first removes the old sidecar, then moves the parquet, then the sidecar: a cell
counts as done only when its sidecar says so *and* its parquet reads with the
recorded number of rows. A process killed at any instant therefore leaves either
the old state, a cell counted as missing (recomputed and overwritten on the next
run), or the finished cell; never a done cell with wrong rows. Leftover temporary
files are removed by :meth:`ResultStore.clean_partial`, called when a store is opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
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
    "seconds": pl.Float64,
    "suite_version": pl.String,
    "cell": pl.String,
}

KINDS = ("natural", "attack", "worst", "certified", "distance")

# Columns that identify a row: a null there is a bug in the evaluator, never "no value".
_REQUIRED = ("metric", "metric_id", "dataset", "split", "kind", "attack", "threat", "norm", "eps",
             "sample_id", "suite_version", "cell")

TMP_PREFIX = ".tmp-"
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_KEY = re.compile(r"[0-9A-Za-z_-]+")
_TMP_NAME = re.compile(r"^\.tmp-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-[0-9a-f]{8}-")


def cell_key(spec: Mapping[str, Any]) -> str:
    """The key of a cell: first 20 hex digits of sha256 of its canonical JSON (sorted keys).

    The spec must be JSON data (str, numbers, bools, None, lists, dicts with str keys);
    tuples count as lists. Anything else is a :class:`SuiteError`, since ``str()`` of an
    object is not stable across runs and would silently defeat resumption.
    """
    try:
        text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise SuiteError(f"cell spec must be plain JSON data (str, numbers, lists, dicts); {err}") from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def empty_rows() -> pl.DataFrame:
    """A frame with no rows and the columns of :data:`ROW_SCHEMA`."""
    return pl.DataFrame(schema=ROW_SCHEMA)


def validate_rows(rows: pl.DataFrame | Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """Rows as a frame with exactly :data:`ROW_SCHEMA` (column order and dtypes), or a :class:`SuiteError`."""
    if isinstance(rows, pl.DataFrame):
        _check_columns(rows.columns, where="the frame")
    else:
        rows = list(rows)
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
    for name in _REQUIRED:
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


def temp_path(final: Path) -> Path:
    """Where a writer puts ``final`` before renaming it: ``.tmp-<pid>-<host hash>-<random>-<name>``.

    The pid and host let :meth:`ResultStore.clean_partial` tell a killed writer's
    leftovers from a file another live process is writing right now.
    """
    return final.with_name(f"{TMP_PREFIX}{os.getpid()}-{_HOST}-{uuid.uuid4().hex[:8]}-{final.name}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ResultStore:
    """Finished and failed cells under ``root`` (see the module docstring for layout and guarantees).

    Several processes (Ray workers) may write different cells of one store at once;
    each file reaches its final name by one atomic rename.
    """

    def __init__(self, root: str | Path, stale_after: float = 3600.0):
        self.root = Path(root)
        self.cells = self.root / "cells"
        self.stale_after = stale_after
        self.cells.mkdir(parents=True, exist_ok=True)
        self.clean_partial()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r})"

    # paths

    def parquet_path(self, key: str) -> Path:
        return self.cells / f"{_check_key(key)}.parquet"

    def json_path(self, key: str) -> Path:
        return self.cells / f"{_check_key(key)}.json"

    # reading

    def _sidecar(self, key: str) -> dict | None:
        try:
            meta = json.loads(self.json_path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def status(self, key: str) -> str:
        """``"done"``, ``"failed"`` or ``"missing"`` (never run, interrupted, or unreadable)."""
        meta = self._sidecar(key)
        if meta is None:
            return "missing"
        if meta.get("status") == "failed":
            return "failed"
        if meta.get("status") != "done":
            return "missing"
        try:
            n = pl.scan_parquet(self.parquet_path(key)).select(pl.len()).collect().item()
        except (OSError, pl.exceptions.PolarsError):
            return "missing"
        return "done" if n == meta.get("rows") else "missing"

    def is_done(self, key: str) -> bool:
        return self.status(key) == "done"

    def keys(self) -> list[str]:
        """Keys of every cell with a sidecar (done or failed), sorted."""
        return sorted(p.stem for p in self.cells.glob("*.json") if _KEY.fullmatch(p.stem))

    def read(self, key: str) -> pl.DataFrame:
        """The rows of a finished cell; a :class:`SuiteError` for a failed or missing one."""
        state = self.status(key)
        if state != "done":
            raise SuiteError(f"cell {key} is {state}, not done: rerun its config to compute it")
        return self._load(key)

    def _load(self, key: str) -> pl.DataFrame:
        return pl.read_parquet(self.parquet_path(key)).select(
            pl.col(name).cast(dtype) for name, dtype in ROW_SCHEMA.items()
        )

    def read_all(self, kind: str | None = None) -> pl.DataFrame:
        """Rows of every finished cell (of one ``kind`` if given), in key order; skips failed and missing cells."""
        if kind is not None and kind not in KINDS:
            raise SuiteError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        frames = []
        for key in self.keys():
            if self.is_done(key):
                try:
                    frames.append(self._load(key))
                except FileNotFoundError:  # turned into a failure by another process meanwhile
                    continue
        rows = pl.concat(frames, how="vertical") if frames else empty_rows()
        return rows if kind is None else rows.filter(pl.col("kind") == kind)

    def failures(self) -> list[dict]:
        """``{"key", "spec", "error", "finished_at"}`` for every failed cell, in key order."""
        out = []
        for key in self.keys():
            meta = self._sidecar(key)
            if meta is not None and meta.get("status") == "failed":
                out.append({"key": key, "spec": meta.get("spec"), "error": meta.get("error"),
                            "finished_at": meta.get("finished_at")})
        return out

    # writing

    def write(self, key: str, spec: Mapping[str, Any], rows: pl.DataFrame | Iterable[Mapping[str, Any]]) -> Path:
        """Record a finished cell, replacing whatever the key held; returns the parquet path.

        Rows are validated against :data:`ROW_SCHEMA` (a missing or extra column, a value
        of the wrong type, a null identifying column, an unknown kind or a ``cell``
        column other than ``key`` is a :class:`SuiteError`, and nothing is written).
        """
        frame = validate_rows(rows)
        wrong = frame.filter(pl.col("cell") != key)["cell"].unique().to_list()
        if wrong:
            raise SuiteError(f"result rows: column 'cell' must equal the cell key {key!r}; found {sorted(wrong)}")
        meta = self._meta(spec, "done", None, frame.height)
        # The old sidecar goes first: until the new one lands, the cell reads as missing.
        self.json_path(key).unlink(missing_ok=True)
        self._atomic(self.parquet_path(key), lambda fh: frame.write_parquet(fh))
        self._atomic(self.json_path(key), lambda fh: fh.write(meta))
        return self.parquet_path(key)

    def write_failure(self, key: str, spec: Mapping[str, Any], error: str) -> Path:
        """Record a cell that raised; ``error`` is kept verbatim (message or traceback)."""
        meta = self._meta(spec, "failed", str(error), 0)
        self._atomic(self.json_path(key), lambda fh: fh.write(meta))
        self.parquet_path(key).unlink(missing_ok=True)
        return self.json_path(key)

    def _meta(self, spec: Mapping[str, Any], status: str, error: str | None, n: int) -> bytes:
        cell_key(spec)  # the same JSON check, before anything touches the disk
        meta = {"spec": spec, "status": status, "error": error, "rows": n,
                "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        return json.dumps(meta, sort_keys=True, indent=1, ensure_ascii=False).encode("utf-8")

    def _atomic(self, final: Path, write) -> None:
        tmp = temp_path(final)
        try:
            with open(tmp, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def clean_partial(self) -> list[Path]:
        """Remove temporary files left by killed writers; returns what it removed.

        A temporary file is left alone while the process that writes it may still be
        alive (same host, live pid), unless it is older than ``stale_after`` seconds:
        another worker may be writing a cell this very moment.
        """
        removed = []
        now = time.time()
        for path in self.cells.glob(f"{TMP_PREFIX}*"):
            match = _TMP_NAME.match(path.name)
            try:
                old = now - path.stat().st_mtime > self.stale_after
            except FileNotFoundError:
                continue
            orphan = match is not None and match["host"] == _HOST and not _pid_alive(int(match["pid"]))
            if old or orphan or match is None:
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise SuiteError(f"cell key must be letters, digits, '_' or '-' (as cell_key() makes); got {key!r}")
    return key
