"""The result store: one parquet file of per-sample rows per finished cell.

Layout under the store's root::

    cells/<key>.parquet   the cell's rows, columns exactly ROW_SCHEMA
    cells/<key>.json      {"spec": ..., "status": "done"|"failed"|"not-evaluated",
                           "error": str|None, "rows": n, "finished_at": ISO 8601 UTC time}

A *failed* cell raised (a bug, bad data); a *not-evaluated* entry records something
that could not be evaluated on this machine through no fault of the run (a metric
whose weights are missing), with the reason; neither has rows.

``<key>`` is :func:`cell_key` of the cell's full specification (metric weights' hash
included), so rerunning a config finds the cells it already finished.

**Rows** have exactly the columns of :data:`suite.schema.ROW_SCHEMA` (documented there);
the store validates them before writing.

**Crash safety.** Every file is written by :func:`suite.atomic.atomic_write`: a temporary
file named ``.tmp-…`` in the same folder, flushed to disk, then moved into place with
``os.replace`` (atomic on POSIX). A write
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
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import polars as pl

from suite.atomic import HOST, TMP_NAME, TMP_PREFIX, atomic_write
from suite.errors import SuiteError
from suite.schema import KINDS, ROW_SCHEMA, empty_rows, validate_rows

_KEY = re.compile(r"[0-9A-Za-z_-]+")


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
        """``"done"``, ``"failed"``, ``"not-evaluated"`` or ``"missing"`` (never run, interrupted, or unreadable)."""
        meta = self._sidecar(key)
        if meta is None:
            return "missing"
        if meta.get("status") in ("failed", "not-evaluated"):
            return meta["status"]
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
        return self._with_status("failed")

    def not_evaluated(self) -> list[dict]:
        """``{"key", "spec", "error", "finished_at"}`` for every not-evaluated entry (``error``: the reason)."""
        return self._with_status("not-evaluated")

    def _with_status(self, status: str) -> list[dict]:
        out = []
        for key in self.keys():
            meta = self._sidecar(key)
            if meta is not None and meta.get("status") == status:
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
        atomic_write(self.parquet_path(key), frame.write_parquet)
        atomic_write(self.json_path(key), meta)
        return self.parquet_path(key)

    def write_failure(self, key: str, spec: Mapping[str, Any], error: str) -> Path:
        """Record a cell that raised; ``error`` is kept verbatim (message or traceback)."""
        return self._write_without_rows(key, spec, "failed", error)

    def write_not_evaluated(self, key: str, spec: Mapping[str, Any], reason: str) -> Path:
        """Record what could not be evaluated here, with the reason (e.g. the missing weights file)."""
        return self._write_without_rows(key, spec, "not-evaluated", reason)

    def forget(self, key: str) -> None:
        """Remove whatever ``key`` holds (sidecar first, so it never reads as done meanwhile)."""
        self.json_path(key).unlink(missing_ok=True)
        self.parquet_path(key).unlink(missing_ok=True)

    def _write_without_rows(self, key: str, spec: Mapping[str, Any], status: str, error: str) -> Path:
        meta = self._meta(spec, status, str(error), 0)
        atomic_write(self.json_path(key), meta)
        self.parquet_path(key).unlink(missing_ok=True)
        return self.json_path(key)

    def _meta(self, spec: Mapping[str, Any], status: str, error: str | None, n: int) -> bytes:
        cell_key(spec)  # the same JSON check, before anything touches the disk
        meta = {"spec": spec, "status": status, "error": error, "rows": n,
                "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        return json.dumps(meta, sort_keys=True, indent=1, ensure_ascii=False).encode("utf-8")

    def clean_partial(self) -> list[Path]:
        """Remove temporary files left by killed writers; returns what it removed.

        A temporary file is left alone while the process that writes it may still be
        alive (same host, live pid), unless it is older than ``stale_after`` seconds:
        another worker may be writing a cell this very moment.
        """
        removed = []
        now = time.time()
        for path in self.cells.glob(f"{TMP_PREFIX}*"):
            match = TMP_NAME.match(path.name)
            try:
                old = now - path.stat().st_mtime > self.stale_after
            except FileNotFoundError:
                continue
            orphan = match is not None and match["host"] == HOST and not _pid_alive(int(match["pid"]))
            if old or orphan or match is None:
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise SuiteError(f"cell key must be letters, digits, '_' or '-' (as cell_key() makes); got {key!r}")
    return key
