"""``lipsim weights``: which published weights this machine has, and ``lipsim weights fetch``, the one download.

``lipsim weights`` lists every registered weights tag (:mod:`metrics.weights`), one line
per file: the tag, its metric, the file, where it was found (or ``missing``) and the
exact path where the suite expects it (``$LIPSIM_SUITE_WEIGHTS/<tag>/<file>``).
``--json`` prints the same as a JSON list.

``lipsim weights fetch TAG [TAG ...] [--dest DIR]`` is the only place in the project that
downloads anything, and only when asked. For each file of each tag that is not already
there it downloads the publisher's URL into ``DIR/<tag>/<file>`` (default: the suite's
weights folder):

- the bytes go to ``<file>.part`` beside the target, which an interrupted download
  leaves behind; the next fetch continues it with an HTTP ``Range: bytes=N-`` request
  (and starts over if the server ignores it);
- the sha256 is checked against the tag's (a full digest or a prefix); a mismatch
  deletes the download and is an error; a file whose publisher states no digest is
  kept with a note that it was not verified;
- the file appears under its final name only complete and checked
  (:func:`suite.atomic.atomic_write` renames the ``.part`` into place);
- files that ship inside a Python package are never downloaded: the command says
  which package to install.

A network failure is a one-line :class:`DownloadError` (``error: …``, exit 2 at the CLI edge).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import importlib
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from metrics import weights as mw
from suite.errors import SuiteError

#: metric family modules that register weights tags; each may not exist (yet) or not import here
FAMILIES = ("metrics.lpips", "metrics.dists", "metrics.clip", "metrics.dino", "metrics.dreamsim")

PART_SUFFIX = ".part"
CHUNK = 1 << 16
#: seconds a connect or a read may stall before the download fails
TIMEOUT = 60.0
USER_AGENT = "lipsim-suite (lipsim weights fetch)"


class DownloadError(SuiteError):
    """A download that failed: the network, the server, or a digest that does not match."""


def load_tags() -> dict[str, str]:
    """Import the metric families so that their tags are registered; ``{module: reason}`` for those that failed.

    A family module that does not exist is left out silently; one that exists but
    cannot be imported (a missing optional dependency) is reported with its reason.
    """
    import metrics  # noqa: F401  (built-ins register their tags on import)

    failed: dict[str, str] = {}
    for name in FAMILIES:
        try:
            importlib.import_module(name)
        except ImportError as err:
            if isinstance(err, ModuleNotFoundError) and err.name == name:
                continue
            failed[name] = f"{type(err).__name__}: {err}"
    return failed


def expected_path(tag: mw.WeightsTag, file: mw.WeightFile, dest: Path | None = None) -> Path:
    """Where the suite keeps (and ``fetch`` puts) ``file`` of ``tag``."""
    return (mw.suite_folder() if dest is None else dest) / tag.tag / file.name


def rows() -> list[dict]:
    """One dict per file of every registered tag (what ``lipsim weights --json`` prints)."""
    out = []
    for tag in sorted(mw.TAGS.values(), key=lambda t: (t.metric, t.tag)):
        found = mw.status(tag)
        for file in tag.files:
            path = found.get(file.name)
            out.append({
                "tag": tag.tag, "metric": tag.metric, "file": file.name,
                "found": str(path) if path is not None else None,
                "expected": str(expected_path(tag, file)),
                "url": file.url, "sha256": file.sha256,
                "package": file.package.partition(":")[0] if file.package else None,
                "paper": tag.paper,
            })
    return out


def metric_notes() -> dict[str, str]:
    """``{metric: "weights: found" | "weights: missing (lipsim weights fetch TAG …)"}`` for metrics with tags."""
    from suite.registry import METRICS

    load_tags()
    by_metric: dict[str, list[mw.WeightsTag]] = {}
    for tag in mw.TAGS.values():
        try:
            key = METRICS.canonical(tag.metric)
        except SuiteError:
            key = tag.metric.lower()
        by_metric.setdefault(key, []).append(tag)
    notes = {}
    for metric, tags in by_metric.items():
        missing = [t.tag for t in sorted(tags, key=lambda t: t.tag)
                   if any(p is None for p in mw.status(t).values())]
        found = [t.tag for t in sorted(tags, key=lambda t: t.tag) if t.tag not in missing]
        if not missing:
            notes[metric] = "weights: found"
        else:
            note = f"weights: missing (lipsim weights fetch {' '.join(missing)})"
            notes[metric] = f"weights: found ({', '.join(found)}); {note[len('weights: '):]}" if found else note
    return notes


# -- listing -------------------------------------------------------------------------------------------------------


def list_weights(as_json: bool = False) -> int:
    failed = load_tags()
    for module, reason in failed.items():
        print(f"note: {module} cannot be imported, its weights are not listed ({reason})", file=sys.stderr)
    table = rows()
    if as_json:
        print(json.dumps(table, indent=1))
        return 0
    origin = f"from ${mw.WEIGHTS_ENV}" if os.environ.get(mw.WEIGHTS_ENV) else f"default; set ${mw.WEIGHTS_ENV} to move it"
    print(f"weights folder: {mw.suite_folder()} ({origin})")
    if not table:
        print("no weights tags are registered")
        return 0
    shown = [(r["tag"], r["metric"], r["file"],
              r["found"] or ("missing" + (f" (pip install {r['package']})" if r["package"] else "")),
              r["expected"]) for r in table]
    head = ("TAG", "METRIC", "FILE", "FOUND", "EXPECTED")
    widths = [max(len(row[i]) for row in [head, *shown]) for i in range(4)]
    for row in [head, *shown]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])
    missing = sorted({r["tag"] for r in table if r["found"] is None and not r["package"]})
    if missing:
        print(f"to download what is missing: lipsim weights fetch {' '.join(missing)}")
    return 0


# -- fetching ------------------------------------------------------------------------------------------------------


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        reason = err.reason
        return str(reason.strerror if isinstance(reason, OSError) and reason.strerror else reason)
    if isinstance(err, TimeoutError):
        return f"no answer within {TIMEOUT:g} s"
    if isinstance(err, http.client.IncompleteRead):
        return f"connection closed early ({len(err.partial)} more bytes, {err.expected} missing)"
    text = str(err.strerror if isinstance(err, OSError) and err.strerror else err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _request(url: str, offset: int):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` of a ``Content-Range`` header (``None`` where absent or ``*``)."""
    match = re.match(r"\s*bytes\s+(\d+|\*)(?:-\d+)?/(\d+|\*)", value or "")
    if not match:
        return None, None
    first, total = match.groups()
    return (int(first) if first != "*" else None), (int(total) if total != "*" else None)


def _lock(fh, part: Path) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the digest still catches a garbled file
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DownloadError(f"another `lipsim weights fetch` is writing {part}; wait for it to finish") from None


def download(url: str, target: str | Path, sha256: str | None = None, *, progress: bool = True,
             label: str | None = None) -> tuple[str, bool | None]:
    """Download ``url`` to ``target`` through ``<target>.part`` (resumed if present); ``(sha256, verified)``.

    ``verified`` is ``True`` when ``sha256`` (a digest or a prefix) matched and ``None``
    when none was given; a mismatch deletes the download and raises :class:`DownloadError`.
    The target appears only complete and checked.
    """
    target = Path(target)
    label = label or target.name
    if not url:
        raise DownloadError(f"{label}: no URL to download it from")
    mw.sha256_matches("", sha256)  # a malformed digest fails before any download
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + PART_SUFFIX)
    with open(part, "ab") as fh:
        _lock(fh, part)
        try:
            return _download_locked(url, target, part, fh, sha256, progress, label)
        finally:
            if part.is_file() and part.stat().st_size == 0:  # nothing worth resuming
                part.unlink(missing_ok=True)


def _download_locked(url: str, target: Path, part: Path, fh, sha256: str | None, progress: bool,
                     label: str) -> tuple[str, bool | None]:
    from jobs.progress import bar as progress_bar

    from suite.atomic import atomic_write

    digest = hashlib.sha256()
    try:
        response, offset = None, os.fstat(fh.fileno()).st_size
        for _attempt in range(2):
            try:
                response = _request(url, offset)
            except urllib.error.HTTPError as err:
                if err.code != 416 or not offset:
                    raise
                err.close()
                if _content_range(err.headers.get("Content-Range"))[1] == offset:
                    break  # the .part already holds every byte: a fetch killed before the rename
                fh.truncate(0)
                offset = 0
                continue
            first = _content_range(response.headers.get("Content-Range"))[0]
            if offset and response.status == 206 and first == offset:
                break
            if response.status == 200:
                if offset:
                    print(f"{label}: the server ignored the range request; starting over", file=sys.stderr)
                fh.truncate(0)
                offset = 0
                break
            status = response.status
            response.close()
            response = None
            if not offset:
                raise DownloadError(f"{label}: unexpected HTTP {status} from {url} (expected 200)")
            fh.truncate(0)  # a partial answer for other bytes than asked: start over
            offset = 0
        else:
            raise DownloadError(f"{label}: the server at {url} does not answer a plain request with the file")
        if offset:
            with open(part, "rb") as done:
                for block in iter(lambda: done.read(1 << 20), b""):
                    digest.update(block)
        if response is not None:
            with response:
                length = response.headers.get("Content-Length")
                length = int(length) if length and length.isdigit() else None
                bar = progress_bar(total=None if length is None else offset + length, initial=offset, unit="B",
                                   unit_scale=True, unit_divisor=1024, desc=label, disable=not progress,
                                   dynamic_ncols=True)
                received = 0
                try:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        fh.write(block)
                        digest.update(block)
                        received += len(block)
                        bar.update(len(block))
                finally:
                    bar.close()
                if length is not None and received < length:
                    raise DownloadError(f"{label}: the connection to {url} closed after {offset + received} of "
                                        f"{offset + length} bytes; rerun `lipsim weights fetch` to resume")
        fh.flush()
        os.fsync(fh.fileno())
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        fh.flush()
        kept = os.fstat(fh.fileno()).st_size
        hint = f"; {kept} bytes are kept in {part}, rerun to resume" if kept else ""
        if not kept:
            part.unlink(missing_ok=True)
        raise DownloadError(f"{label}: download from {url} failed: {_reason(err)}{hint}") from None
    got = digest.hexdigest()
    verified = mw.sha256_matches(got, sha256)
    if verified is False:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{label}: sha256 mismatch: expected {sha256.strip().lower()}"
                            f"{'…' if len(sha256.strip()) < 64 else ''}, got {got}; the download from {url} "
                            "was deleted")
    atomic_write(target, lambda tmp: os.replace(part, tmp))
    return got, verified


def fetch(tags: list[str], dest: str | Path | None = None, *, progress: bool = True) -> int:
    """Download every missing file of ``tags`` (see the module docstring); the count of files still missing."""
    failed = load_tags()
    unknown = [t for t in tags if t not in mw.TAGS]
    if unknown and failed:
        raise SuiteError(f"unknown weights tag {unknown[0]!r}; these metric modules cannot be imported, so their "
                         f"tags are unknown: {'; '.join(f'{m} ({r})' for m, r in failed.items())}")
    chosen = [mw.get_tag(t) for t in dict.fromkeys(tags)]  # every name checked before any download
    folder = mw.suite_folder() if dest is None else Path(dest).expanduser()
    default_dest = dest is None or folder.resolve() == mw.suite_folder().resolve()
    still_missing = 0
    for tag in chosen:
        for file in tag.files:
            label = f"{tag.tag}/{file.name}"
            target = folder / tag.tag / file.name
            if target.is_file():
                print(f"{label}: already present: {target}")
                continue
            if default_dest or file.package:
                try:
                    print(f"{label}: already present: {mw.locate(tag, file.name)}")
                    continue
                except SuiteError:
                    pass
            if file.package:
                package = file.package.partition(":")[0]
                print(f"{label}: ships inside the Python package {package!r}, which is not installed; it is never "
                      f"downloaded: install it (pip install {package})")
                still_missing += 1
                continue
            print(f"{label}: downloading {file.url}", flush=True)
            got, verified = download(file.url, target, file.sha256, progress=progress, label=label)
            if verified:
                print(f"{label}: sha256 verified ({got}): {target}")
            else:
                print(f"{label}: saved to {target}; NOT verified, the publisher states no sha256 (got {got})")
    return still_missing


# -- command line --------------------------------------------------------------------------------------------------


def _run(args) -> int:
    if getattr(args, "action", None) == "fetch":
        return 1 if fetch(args.tags, args.dest, progress=not args.no_progress) else 0
    return list_weights(as_json=args.json)


def add_parser(sub) -> argparse.ArgumentParser:
    """Add ``weights`` (and ``weights fetch``) to the ``lipsim`` subcommands."""
    p = sub.add_parser(
        "weights", help="list the published weights the metrics need; `weights fetch TAG` downloads them",
        description="List every registered weights tag, one line per file: tag, metric, file, where it was found "
                    "(or missing) and the path where the suite expects it ($LIPSIM_SUITE_WEIGHTS/<tag>/<file>). "
                    "Nothing is downloaded except by `lipsim weights fetch`.",
        epilog="example:\n  lipsim weights\n  lipsim weights --json", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=_run, action=None)
    actions = p.add_subparsers(dest="action", metavar="{fetch}")
    f = actions.add_parser(
        "fetch", help="download the files of weights tags (resumable, sha256-checked)",
        description="Download every file of TAG that is not already on this machine into DEST/<tag>/<file>: "
                    "resumable (a .part file is continued with an HTTP range request), checked against the "
                    "tag's sha256, and renamed into place only when complete. Files that ship inside a Python "
                    "package are not downloaded; the package to install is named. Exit status: 0 when every file "
                    "is there, 1 when a package still has to be installed, 2 on an error.",
        epilog="example:\n  lipsim weights fetch lpips-alex dino-vitb16", formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("tags", nargs="+", metavar="TAG", help="weights tag, e.g. lpips-alex (`lipsim weights` lists them)")
    f.add_argument("--dest", metavar="DIR",
                   help=f"folder to download into (default: ${mw.WEIGHTS_ENV}, else ~/.cache/lipsim-suite/weights); "
                        "with the default, files found in another cache (torch hub, Hugging Face) are not fetched")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.set_defaults(func=_run)
    return p


__all__ = ["DownloadError", "FAMILIES", "add_parser", "download", "fetch", "list_weights", "load_tags",
           "metric_notes", "rows"]
