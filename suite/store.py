"""The result store: one parquet file of per-sample rows per finished cell.

Layout under the store's root::

    cells/<key>.parquet   the cell's rows, columns exactly ROW_SCHEMA
    cells/<key>.json      {"spec": ..., "status": "done"|"failed"|"not-evaluated",
                           "error": str|None, "rows": n, "sha256": hex digest of the parquet's bytes,
                           "finished_at": ISO 8601 UTC time}
    shards/<key>/<start>-<stop>-<digest>.parquet
                          finished sample shards of a cell still being computed: rows of the
                          samples [start, stop), <digest> the first 16 hex digits of the file's sha256
    .lock                 held (flock) by the one run that writes here; names its pid and host

A *failed* cell raised (a bug, bad data); a *not-evaluated* entry records something
that could not be evaluated on this machine through no fault of the run (a metric
whose weights are missing), with the reason; neither has rows.

``<key>`` is :func:`cell_key` of the cell's full specification (metric weights' hash
included), so rerunning a config finds the cells it already finished.

**Rows** have exactly the columns of :data:`suite.schema.ROW_SCHEMA` (documented there);
the store validates them before writing.

**A done cell verifies.** A cell counts as done only when its sidecar says so *and* the
bytes of its parquet have the sidecar's sha256 *and* hold the sidecar's number of rows.
A sidecar that says done over a parquet that does not verify (a missing, truncated,
rewritten or bit-flipped file, or a sidecar without a checksum) is *damaged*:
:meth:`ResultStore.check` says what is wrong, the cell reads as missing, and the next
run recomputes it. Readers (:meth:`ResultStore.read`, :meth:`ResultStore.read_all`)
read the parquet's bytes once and parse the very bytes they verified, so they see the
whole old cell, the whole new cell, or none; never half of a cell being replaced.

**Crash safety.** Every file is written by :func:`suite.atomic.atomic_write`: a temporary
file named ``.tmp-…`` in the same folder, flushed to disk, then moved into place with
``os.replace`` (atomic on POSIX). What a process killed at each step of a write leaves:

1. *before the old sidecar is removed*: the old state (the old cell, or nothing);
2. *between removing the old sidecar and moving the parquet*: a missing cell;
3. *between the parquet and the sidecar* (the parquet is new, no sidecar): a missing cell;
4. *after the sidecar*: the finished cell.

It never leaves a done cell with wrong rows; a missing cell is recomputed and overwritten
by the next run. Leftover temporary files are removed by :meth:`ResultStore.clean_partial`,
called when a store is opened.

**Shards.** A large cell is computed as sample shards (``jobs/shards.py``); each finished
shard is one file, written atomically, whose name carries its checksum, so a shard file
is either whole and verifiable or absent. A driver killed while shards are finished
keeps them: the next run computes only the missing shards. Merging writes the cell
(steps 1–4 above) and *then* removes its shard folder: killed in between, the cell is
done and its leftover shards are removed by the next run (:meth:`ResultStore.drop_shards`).

**One writer.** A run holds :meth:`ResultStore.lock` (an ``flock`` on ``.lock``) while it
writes; a second run on the same folder fails at once with a one-line message naming the
holder. The kernel releases the lock of a process that dies, so the lock of a killed run
(a dead pid) is simply taken over.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import polars as pl

from suite.atomic import HOST, TMP_NAME, TMP_PREFIX, atomic_write
from suite.errors import SuiteError
from suite.schema import KINDS, OPTIONAL, ROW_SCHEMA, empty_rows, validate_rows

_KEY = re.compile(r"[0-9A-Za-z_-]+")
_SHARD = re.compile(r"^(?P<start>\d+)-(?P<stop>\d+)-(?P<digest>[0-9a-f]{16})\.parquet$")
LOCK_NAME = ".lock"


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


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def _parse(data: bytes) -> pl.DataFrame:
    """The rows of a cell's parquet with exactly :data:`ROW_SCHEMA`; an optional column the file predates
    (written before that column existed) reads as null."""
    frame = pl.read_parquet(io.BytesIO(data))
    frame = frame.with_columns(pl.lit(None).alias(c) for c in OPTIONAL if c not in frame.columns)
    return frame.select(pl.col(name).cast(dtype) for name, dtype in ROW_SCHEMA.items())


def _problem(data: bytes, meta: dict) -> str | None:
    """What is wrong with ``data`` as the parquet of the done sidecar ``meta``; ``None`` if it verifies."""
    digest = meta.get("sha256")
    if not isinstance(digest, str):
        return "its sidecar has no checksum (written by an older version of the suite)"
    if hashlib.sha256(data).hexdigest() != digest:
        return "its parquet does not match the checksum in its sidecar"
    try:
        n = pl.scan_parquet(io.BytesIO(data)).select(pl.len()).collect().item()
    except pl.exceptions.PolarsError as err:
        return f"its parquet does not read ({type(err).__name__})"
    if n != meta.get("rows"):
        return f"its parquet holds {n} rows, its sidecar says {meta.get('rows')}"
    return None


class ResultStore:
    """Finished and failed cells under ``root`` (see the module docstring for layout and guarantees).

    Several processes may read a store while one run writes it; each file reaches its
    final name by one atomic rename.
    """

    def __init__(self, root: str | Path, stale_after: float = 3600.0):
        self.root = Path(root)
        self.cells = self.root / "cells"
        self.shards = self.root / "shards"
        self.stale_after = stale_after
        #: key -> (file identity, sidecar checksum, rows) of the parquet last verified, to hash it once
        self._verified: dict[str, tuple] = {}
        self.cells.mkdir(parents=True, exist_ok=True)
        self.clean_partial()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r})"

    # paths

    def parquet_path(self, key: str) -> Path:
        return self.cells / f"{_check_key(key)}.parquet"

    def json_path(self, key: str) -> Path:
        return self.cells / f"{_check_key(key)}.json"

    def shard_dir(self, key: str) -> Path:
        return self.shards / _check_key(key)

    # reading

    def _sidecar(self, key: str) -> dict | None:
        try:
            meta = json.loads(self.json_path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def _open(self, key: str, load: bool) -> tuple[str, str | None, pl.DataFrame | None]:
        """``(status, what is wrong with a damaged done cell, its rows when load and done)``."""
        meta = self._sidecar(key)
        if meta is None:
            return "missing", None, None
        if meta.get("status") in ("failed", "not-evaluated"):
            return meta["status"], None, None
        if meta.get("status") != "done":
            return "missing", None, None
        path = self.parquet_path(key)
        try:
            st = path.stat()
            seen = (st.st_ino, st.st_size, st.st_mtime_ns, meta.get("sha256"), meta.get("rows"))
            if not load and self._verified.get(key) == seen:
                return "done", None, None
            data = path.read_bytes()
        except FileNotFoundError:
            return "missing", "its parquet file is missing", None
        except OSError as err:
            return "missing", f"its parquet cannot be read ({err.strerror or err})", None
        problem = _problem(data, meta)
        if problem is not None:
            self._verified.pop(key, None)
            return "missing", problem, None
        self._verified[key] = seen
        return "done", None, _parse(data) if load else None

    def check(self, key: str) -> tuple[str, str | None]:
        """:meth:`status`, and what is wrong when the sidecar says done but the parquet does not verify
        (the cell is *damaged*: it reads as missing and is recomputed); ``None`` otherwise."""
        state, problem, _ = self._open(key, load=False)
        return state, problem

    def status(self, key: str) -> str:
        """``"done"``, ``"failed"``, ``"not-evaluated"`` or ``"missing"`` (never run, interrupted, or damaged)."""
        return self.check(key)[0]

    def is_done(self, key: str) -> bool:
        return self.status(key) == "done"

    def keys(self) -> list[str]:
        """Keys of every cell with a sidecar (done or failed), sorted."""
        return sorted(p.stem for p in self.cells.glob("*.json") if _KEY.fullmatch(p.stem))

    def read(self, key: str) -> pl.DataFrame:
        """The rows of a finished cell, parsed from the bytes that were verified; a :class:`SuiteError`
        for a failed, missing or damaged one."""
        state, problem, rows = self._open(key, load=True)
        if rows is None:
            why = f" ({problem})" if problem else ""
            raise SuiteError(f"cell {key} is {state}{why}, not done: rerun its config to compute it")
        return rows

    def read_all(self, kind: str | None = None) -> pl.DataFrame:
        """Rows of every finished cell (of one ``kind`` if given), in key order; skips failed, missing and
        damaged cells."""
        if kind is not None and kind not in KINDS:
            raise SuiteError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        frames = []
        for key in self.keys():
            _, _, rows = self._open(key, load=True)
            if rows is not None:
                frames.append(rows)
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
        data = _parquet_bytes(frame)
        meta = self._meta(spec, "done", None, frame.height, hashlib.sha256(data).hexdigest())
        # The old sidecar goes first: until the new one lands, the cell reads as missing.
        self.json_path(key).unlink(missing_ok=True)
        atomic_write(self.parquet_path(key), data)
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
        meta = self._meta(spec, status, str(error), 0, None)
        atomic_write(self.json_path(key), meta)
        self.parquet_path(key).unlink(missing_ok=True)
        return self.json_path(key)

    def _meta(self, spec: Mapping[str, Any], status: str, error: str | None, n: int, digest: str | None) -> bytes:
        cell_key(spec)  # the same JSON check, before anything touches the disk
        meta = {"spec": spec, "status": status, "error": error, "rows": n,
                "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if digest is not None:
            meta["sha256"] = digest
        return json.dumps(meta, sort_keys=True, indent=1, ensure_ascii=False).encode("utf-8")

    # shards of a cell being computed

    def write_shard(self, key: str, start: int, stop: int, rows: pl.DataFrame | Iterable[Mapping[str, Any]]) -> Path:
        """Keep the rows of samples ``[start, stop)`` of cell ``key`` until the whole cell is there."""
        frame = validate_rows(rows)
        data = _parquet_bytes(frame)
        name = f"{int(start)}-{int(stop)}-{hashlib.sha256(data).hexdigest()[:16]}.parquet"
        return atomic_write(self.shard_dir(key) / name, data)

    def read_shards(self, key: str) -> dict[tuple[int, int], pl.DataFrame]:
        """The finished shards of cell ``key``: ``{(start, stop): rows}``. A shard file whose bytes do
        not match the checksum in its name is removed (it is computed again)."""
        found: dict[tuple[int, int], pl.DataFrame] = {}
        folder = self.shard_dir(key)
        if not folder.is_dir():
            return found
        for path in sorted(folder.iterdir()):
            match = _SHARD.match(path.name)
            if match is None:
                continue
            try:
                data = path.read_bytes()
                if hashlib.sha256(data).hexdigest()[:16] != match["digest"]:
                    raise ValueError("checksum")
                found[(int(match["start"]), int(match["stop"]))] = _parse(data)
            except (OSError, ValueError, pl.exceptions.PolarsError):
                path.unlink(missing_ok=True)
        return found

    def drop_shards(self, key: str) -> None:
        """Remove the shard folder of cell ``key`` (once the cell is written)."""
        shutil.rmtree(self.shard_dir(key), ignore_errors=True)

    def clean_partial(self) -> list[Path]:
        """Remove temporary files left by killed writers; returns what it removed.

        A temporary file is left alone while the process that writes it may still be
        alive (same host, live pid), unless it is older than ``stale_after`` seconds:
        another process may be writing a file this very moment.
        """
        removed = []
        now = time.time()
        folders = [self.cells, *(p for p in self.shards.glob("*") if p.is_dir())]
        for path in (p for folder in folders for p in folder.glob(f"{TMP_PREFIX}*")):
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

    # one writer

    def lock(self) -> RunLock:
        """The lock a run holds while it writes this store (``with store.lock(): ...``)."""
        return self.lock_of(self.root)

    @staticmethod
    def lock_of(root: str | Path) -> RunLock:
        """The lock of the store at ``root``, without opening the store (nothing is created but the lock file)."""
        return RunLock(Path(root) / LOCK_NAME)


class RunLock:
    """``flock`` on a lock file, which names its holder as JSON ``{"pid", "host", "hostname", "since"}``.

    :meth:`acquire` fails at once (or after ``wait`` seconds) with a one-line
    :class:`SuiteError` naming the holder. The kernel drops the lock of a dead process, so a
    lock file left by a killed run is taken over. On a file system without ``flock`` the
    file's content decides: a holder on this host whose pid is gone is taken over, any
    other holder is respected.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def holder(self) -> dict:
        """What the lock file says about its holder (``{}`` when it is empty or unreadable)."""
        try:
            value = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def acquire(self, wait: float = 0.0) -> RunLock:
        deadline = time.monotonic() + wait
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as err:
                raise SuiteError(f"cannot create the lock file {str(self.path)!r} ({err.strerror or err}); "
                                 "the results folder must be writable") from None
            try:
                locked = self._try_lock(fd)
                if locked:
                    self._write_holder(fd)
            except BaseException:
                os.close(fd)
                raise
            if locked:
                self._fd = fd
                return self
            os.close(fd)
            if time.monotonic() >= deadline:
                raise SuiteError(self._busy_message())
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _try_lock(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            holder = self.holder()  # no flock here: the content decides
            mine = holder.get("host") == HOST
            return not holder or (mine and not _pid_alive(int(holder.get("pid", 0))))
        try:  # a holder that released (and unlinked) between our open and flock left us a dead inode
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def _write_holder(self, fd: int) -> None:
        holder = {"pid": os.getpid(), "host": HOST, "hostname": socket.gethostname(),
                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode("utf-8"), 0)
        os.fsync(fd)

    def _busy_message(self) -> str:
        holder = self.holder()
        who = (f"pid {holder.get('pid', '?')} on host {holder.get('hostname', '?')}, since {holder.get('since', '?')}"
               if holder else "a process that has not written its name yet")
        return (f"results folder {str(self.path.parent)!r} is in use by another run ({who}; lock file "
                f"{self.path.name}); wait for it to finish, or give another results folder")

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still held, so nobody locks the file being removed
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise SuiteError(f"cell key must be letters, digits, '_' or '-' (as cell_key() makes); got {key!r}")
    return key
