"""The one atomic file writer: a reader sees the old file or the whole new one, never half of it.

``atomic_write(final, data)`` writes ``data`` (bytes, or a callable that writes a file
at the path it is given) to a temporary file in the same folder, flushes it to disk
(``fsync``), makes it readable by all (``0644``, results are meant to be shared),
then moves it onto ``final`` with ``os.replace``, which is atomic on POSIX file
systems when both names are in one folder. If anything fails the temporary file is
removed and ``final`` is untouched.

Temporary names are ``.tmp-<pid>-<host hash>-<random>-<final name>`` so that a
cleaner (:meth:`suite.store.ResultStore.clean_partial`) can tell a killed writer's
leftovers from a file a live process is still writing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import uuid
from pathlib import Path
from typing import Any, Callable

TMP_PREFIX = ".tmp-"
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
TMP_NAME = re.compile(r"^\.tmp-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-[0-9a-f]{8}-")


def temp_path(final: Path) -> Path:
    """Where a writer puts ``final`` before renaming it (same folder, see the module docstring)."""
    final = Path(final)
    return final.with_name(f"{TMP_PREFIX}{os.getpid()}-{HOST}-{uuid.uuid4().hex[:8]}-{final.name}")


def atomic_write(final: str | Path, data: bytes | Callable[[Path], Any], *, mkdir: bool = True) -> Path:
    """Write ``data`` to ``final`` atomically and durably; returns ``final`` as a :class:`Path`.

    ``data`` is the file's bytes, or a callable ``write(path)`` that creates the file
    at ``path`` (``frame.write_parquet``, ``torch.save``, ``safetensors.save_file``).
    """
    final = Path(final)
    if mkdir:
        final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def atomic_write_json(final: str | Path, value: Any) -> Path:
    """:func:`atomic_write` of ``value`` as indented JSON with sorted keys and a final newline."""
    text = json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    return atomic_write(final, text.encode("utf-8"))


__all__ = ["HOST", "TMP_NAME", "TMP_PREFIX", "atomic_write", "atomic_write_json", "temp_path"]
