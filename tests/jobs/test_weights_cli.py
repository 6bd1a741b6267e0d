"""``lipsim weights`` and ``lipsim weights fetch`` against a local HTTP server (no internet)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import jobs.weights as jw
from jobs.cli import main
from metrics import weights as mw
from suite.errors import SuiteError

DATA = hashlib.sha256(b"seed").digest() * 6000  # 192,000 bytes: several chunks of the download loop
DIGEST = hashlib.sha256(DATA).hexdigest()
HALF = len(DATA) // 2
TAG = "test-weights-cli"
FILE = "model.bin"


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-`` unless ``server.honour_range`` is off."""

    timeout = 10  # a stuck client cannot hold a handler thread for ever
    protocol_version = "HTTP/1.0"

    def do_GET(self):  # noqa: N802
        srv = self.server
        srv.seen.append(self.headers.get("Range"))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start, status = 0, 200
        wanted = self.headers.get("Range")
        if wanted and srv.honour_range:
            match = re.fullmatch(r"bytes=(\d+)-", wanted.strip())
            if not match:
                self.send_error(400, "only bytes=N- ranges")
                return
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if srv.cut:  # the connection drops half way through the body
            body = body[: len(body) // 2]
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.seen, srv.honour_range, srv.cut = {f"/{FILE}": DATA}, [], True, False
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/{FILE}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    monkeypatch.setenv(mw.WEIGHTS_ENV, str(folder))
    monkeypatch.setattr(jw, "TIMEOUT", 10.0)
    jw.load_tags()  # the families register their own tags now, not in the middle of a test
    return folder


def _register(monkeypatch, url: str, sha256: str | None = DIGEST, package: str | None = None, metric="lipsim",
              tag=TAG, name=FILE) -> mw.WeightsTag:
    weights = mw.WeightsTag(tag, metric, (mw.WeightFile(name, url, sha256=sha256, package=package),),
                            paper="a test")
    monkeypatch.setitem(mw.TAGS, tag, weights)
    return weights


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("sha256", [DIGEST, DIGEST[:10], DIGEST[:16].upper()], ids=["full", "prefix", "upper"])
def test_fetch_downloads_verifies_and_a_second_fetch_is_a_noop(server, weights_dir, monkeypatch, capsys, sha256):
    _register(monkeypatch, server.url, sha256)
    assert main(["weights", "fetch", TAG]) == 0
    out, err = capsys.readouterr()
    target = weights_dir / TAG / FILE
    assert target.read_bytes() == DATA
    assert not (weights_dir / TAG / f"{FILE}.part").exists()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert "sha256 verified" in out and DIGEST in out
    assert "100%" in err and TAG in err  # the progress bar, on stderr, knew the total size
    assert server.seen == [None]

    assert main(["weights", "fetch", TAG]) == 0
    out, _ = capsys.readouterr()
    assert "already present" in out and str(target) in out
    assert server.seen == [None]  # no request at all
    assert sorted(p.name for p in (weights_dir / TAG).iterdir()) == [FILE]


def test_interrupted_download_resumes_with_a_range_request(server, weights_dir, monkeypatch, capsys):
    _register(monkeypatch, server.url)
    part = weights_dir / TAG / f"{FILE}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA[:HALF])
    assert main(["weights", "fetch", TAG, "--no-progress"]) == 0
    assert server.seen == [f"bytes={HALF}-"]
    assert (weights_dir / TAG / FILE).read_bytes() == DATA
    assert not part.exists()
    assert "sha256 verified" in capsys.readouterr().out


def test_a_server_that_ignores_range_is_downloaded_from_the_start(server, weights_dir, monkeypatch, capsys):
    server.honour_range = False
    _register(monkeypatch, server.url)
    part = weights_dir / TAG / f"{FILE}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * HALF)  # not even the right bytes: they must all be replaced
    assert main(["weights", "fetch", TAG, "--no-progress"]) == 0
    assert server.seen == [f"bytes={HALF}-"]
    assert (weights_dir / TAG / FILE).read_bytes() == DATA
    assert not part.exists()
    assert "starting over" in capsys.readouterr().err


def test_a_dropped_connection_keeps_the_part_and_the_next_fetch_resumes(server, weights_dir, monkeypatch, capsys):
    _register(monkeypatch, server.url)
    server.cut = True
    assert main(["weights", "fetch", TAG, "--no-progress"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "resume" in line
    part = weights_dir / TAG / f"{FILE}.part"
    kept = part.stat().st_size
    assert 0 < kept < len(DATA) and part.read_bytes() == DATA[:kept]
    assert not (weights_dir / TAG / FILE).exists()

    server.cut = False
    assert main(["weights", "fetch", TAG, "--no-progress"]) == 0
    assert server.seen == [None, f"bytes={kept}-"]
    assert (weights_dir / TAG / FILE).read_bytes() == DATA and not part.exists()


def test_a_complete_part_left_before_the_rename_is_finished_without_downloading(server, weights_dir, monkeypatch,
                                                                                 capsys):
    _register(monkeypatch, server.url)
    part = weights_dir / TAG / f"{FILE}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA)
    assert main(["weights", "fetch", TAG, "--no-progress"]) == 0
    assert server.seen == [f"bytes={len(DATA)}-"]  # answered 416 with the size: nothing more to fetch
    assert (weights_dir / TAG / FILE).read_bytes() == DATA and not part.exists()


def test_a_wrong_hash_is_an_error_and_leaves_nothing(server, weights_dir, monkeypatch, capsys):
    wrong = "0" * 64
    _register(monkeypatch, server.url, wrong)
    assert main(["weights", "fetch", TAG, "--no-progress"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "sha256 mismatch" in line and f"expected {wrong}" in line and f"got {DIGEST}" in line
    assert not (weights_dir / TAG / FILE).exists()
    assert not (weights_dir / TAG / f"{FILE}.part").exists()
    assert [p.name for p in (weights_dir / TAG).iterdir()] == []


def test_no_stated_hash_is_said_to_be_unverified(server, weights_dir, monkeypatch, capsys):
    _register(monkeypatch, server.url, None)
    assert main(["weights", "fetch", TAG, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "NOT verified" in out and DIGEST in out
    assert (weights_dir / TAG / FILE).read_bytes() == DATA


def test_an_unreachable_url_is_a_one_line_error(weights_dir, monkeypatch, capsys):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _register(monkeypatch, f"http://127.0.0.1:{port}/{FILE}")
    assert main(["weights", "fetch", TAG, "--no-progress"]) == 2
    out, err = capsys.readouterr()
    line = _error_line(err)
    assert f"127.0.0.1:{port}" in line and "refused" in line.lower()
    assert len(err.strip().splitlines()) == 1
    assert not (weights_dir / TAG).exists() or list((weights_dir / TAG).iterdir()) == []


def test_a_missing_file_on_the_server_is_a_one_line_error(server, weights_dir, monkeypatch, capsys):
    _register(monkeypatch, server.url.replace(FILE, "nope.bin"))
    assert main(["weights", "fetch", TAG, "--no-progress"]) == 2
    assert "HTTP 404" in _error_line(capsys.readouterr().err)


def test_an_unknown_tag_is_an_error_before_any_download(server, weights_dir, monkeypatch, capsys):
    _register(monkeypatch, server.url)
    assert main(["weights", "fetch", TAG, f"{TAG}x"]) == 2
    assert f"unknown weights tag '{TAG}x'" in _error_line(capsys.readouterr().err)
    assert server.seen == []


def test_dest_puts_the_files_in_another_folder(server, weights_dir, tmp_path, monkeypatch, capsys):
    _register(monkeypatch, server.url)
    assert main(["weights", "fetch", TAG, "--dest", str(tmp_path / "elsewhere"), "--no-progress"]) == 0
    assert (tmp_path / "elsewhere" / TAG / FILE).read_bytes() == DATA
    assert not (weights_dir / TAG / FILE).exists()


def test_files_inside_a_package_are_never_downloaded(server, weights_dir, monkeypatch, capsys):
    _register(monkeypatch, server.url, package="not_a_package_xyz:weights/model.bin")
    assert main(["weights", "fetch", TAG, "--no-progress"]) == 1
    assert "pip install not_a_package_xyz" in capsys.readouterr().out
    _register(monkeypatch, server.url, package="tqdm:__init__.py", tag=f"{TAG}-pkg", name="__init__.py")
    assert main(["weights", "fetch", f"{TAG}-pkg", "--no-progress"]) == 0
    assert "already present" in capsys.readouterr().out
    assert server.seen == []


def test_weights_lists_missing_then_found_with_the_expected_path(server, weights_dir, monkeypatch, capsys):
    _register(monkeypatch, server.url)
    expected = weights_dir / TAG / FILE
    assert main(["weights"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(TAG))
    assert line.split()[:4] == [TAG, "lipsim", FILE, "missing"] and line.endswith(str(expected))

    assert main(["weights", "fetch", TAG, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["weights"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(TAG))
    assert line.split() == [TAG, "lipsim", FILE, str(expected), str(expected)]

    assert main(["weights", "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["tag"] == TAG)
    assert row["found"] == str(expected) and row["expected"] == str(expected) and row["sha256"] == DIGEST


def test_list_metrics_shows_whether_the_weights_are_there(server, weights_dir, monkeypatch, capsys):
    for name, other in list(mw.TAGS.items()):  # only the test's tag speaks for lipsim here
        if other.metric == "lipsim":
            monkeypatch.delitem(mw.TAGS, name)
    _register(monkeypatch, server.url)

    def lines():
        assert main(["list", "metrics"]) == 0
        return {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}

    before = lines()
    assert before["lipsim"].endswith(f"[weights: missing (lipsim weights fetch {TAG})]")
    assert "weights:" not in before["l2"]
    assert main(["weights", "fetch", TAG, "--no-progress"]) == 0
    capsys.readouterr()
    assert lines()["lipsim"].endswith("[weights: found]")


def test_sha256_helpers(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(DATA)
    assert mw.file_sha256(path) == DIGEST
    assert mw.sha256_matches(DIGEST, DIGEST[:8].upper()) is True
    assert mw.sha256_matches(DIGEST, "ffff" if not DIGEST.startswith("ffff") else "0000") is False
    assert mw.sha256_matches(DIGEST, None) is None
    with pytest.raises(SuiteError, match="not a hex digest"):
        mw.sha256_matches(DIGEST, "xyz")
    assert os.path.exists(path)


def test_version_attack_listing_and_flag_errors_read_as_a_user_meets_them(capsys):
    import suite
    from jobs.cli import main as cli

    with pytest.raises(SystemExit) as done:
        cli(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"lipsim-suite {suite.__version__}"
    assert cli(["list", "attacks"]) == 0
    out = capsys.readouterr().out
    assert "mia" in out and "aliases mi-fgsm, mifgsm; threats ref, all; norms l2, linf" in out
    assert "``" not in out and ":func:" not in out
    assert cli(["certify", "--eps", "-1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --eps: ε must be a finite number ≥ 0") and "[[evaluations]]" not in err
