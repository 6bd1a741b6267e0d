"""The result store: keys, schema validation, statuses, and crash safety of writes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

from suite.errors import SuiteError
from suite.atomic import TMP_PREFIX, temp_path
from suite.schema import KINDS, ROW_SCHEMA
from suite.store import LOCK_NAME, ResultStore, RunLock, cell_key

REPO = Path(__file__).resolve().parents[2]
SPEC = {"metric": "lipsim", "metric_id": "w0", "dataset": "nights", "split": "test", "kind": "natural",
        "attack": "", "threat": "", "norm": "", "eps": 0.0, "seed": 0}


def make_rows(key: str, n: int = 3, kind: str = "natural", score: float = 1.0) -> list[dict]:
    return [
        {"metric": "lipsim", "metric_id": "w0", "dataset": "nights", "split": "test", "kind": kind,
         "attack": "", "threat": "", "norm": "", "eps": 0, "sample_id": f"s{i}", "judge": 0.8,
         "d0": 0.1, "d1": 0.2, "score": score, "radius": None, "reached": None, "bound": None, "seconds": 0.5, "suite_version": "0.1.0",
         "cell": key}
        for i in range(n)
    ]


def spec_with(**changes) -> tuple[str, dict]:
    spec = {**SPEC, **changes}
    return cell_key(spec), spec


def temp_files(store: ResultStore) -> list[str]:
    return sorted(p.name for p in store.cells.iterdir() if p.name.startswith(TMP_PREFIX))


# cell keys


def test_cell_key_is_20_hex_and_ignores_key_order():
    key = cell_key(SPEC)
    assert len(key) == 20 and int(key, 16) >= 0
    assert cell_key(dict(reversed(list(SPEC.items())))) == key


def test_cell_key_changes_with_any_field_including_weights_hash():
    assert cell_key({**SPEC, "metric_id": "w1"}) != cell_key(SPEC)
    assert cell_key({**SPEC, "eps": 8 / 255}) != cell_key(SPEC)
    assert cell_key({**SPEC, "options": {"a": 1}}) != cell_key({**SPEC, "options": {"a": 2}})


def test_cell_key_rejects_non_json_spec():
    with pytest.raises(SuiteError, match="JSON"):
        cell_key({**SPEC, "path": Path("/x")})


# writing and reading


def test_write_then_read_round_trips_with_row_schema(tmp_path):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    store.write(key, spec, make_rows(key))
    frame = store.read(key)
    assert frame.schema == pl.Schema(ROW_SCHEMA)
    assert frame["sample_id"].to_list() == ["s0", "s1", "s2"]
    assert frame["eps"].to_list() == [0.0] * 3
    meta = json.loads(store.json_path(key).read_text())
    assert meta["spec"] == spec and meta["status"] == "done" and meta["error"] is None and meta["rows"] == 3
    assert meta["finished_at"].endswith("+00:00")
    assert meta["sha256"] == hashlib.sha256(store.parquet_path(key).read_bytes()).hexdigest()


def test_write_accepts_a_frame_in_any_column_order_and_casts(tmp_path):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    frame = pl.DataFrame(make_rows(key)).with_columns(pl.col("eps").cast(pl.Int64))
    store.write(key, spec, frame.select(reversed(frame.columns)))
    assert store.read(key).schema == pl.Schema(ROW_SCHEMA)


def test_write_accepts_zero_rows(tmp_path):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    store.write(key, spec, [])
    assert store.is_done(key) and store.read(key).height == 0


@pytest.mark.parametrize("as_frame", [False, True])
def test_missing_column_is_an_error_naming_it(tmp_path, as_frame):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    rows = [{k: v for k, v in row.items() if k != "radius"} for row in make_rows(key)]
    with pytest.raises(SuiteError, match="lacks column.*'radius'"):
        store.write(key, spec, pl.DataFrame(rows) if as_frame else rows)
    assert store.status(key) == "missing"
    assert list(store.cells.iterdir()) == []


@pytest.mark.parametrize("as_frame", [False, True])
def test_extra_column_is_an_error_naming_it(tmp_path, as_frame):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    rows = [{**row, "lpips_layer": 3} for row in make_rows(key)]
    with pytest.raises(SuiteError, match="'lpips_layer' not in ROW_SCHEMA"):
        store.write(key, spec, pl.DataFrame(rows) if as_frame else rows)


@pytest.mark.parametrize("as_frame", [False, True])
def test_wrong_value_type_is_an_error_naming_the_column(tmp_path, as_frame):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    rows = make_rows(key)
    for row in rows:
        row["score"] = "high"
    with pytest.raises(SuiteError, match="column 'score' must hold"):
        store.write(key, spec, pl.DataFrame(rows) if as_frame else rows)


def test_rows_must_name_their_own_cell_a_known_kind_and_no_null_identity(tmp_path):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    with pytest.raises(SuiteError, match="'cell' must equal"):
        store.write(key, spec, make_rows("another"))
    with pytest.raises(SuiteError, match="'kind' must be one of"):
        store.write(key, spec, make_rows(key, kind="adversarial"))
    rows = make_rows(key)
    rows[0]["attack"] = None
    with pytest.raises(SuiteError, match="'attack' has 1 null"):
        store.write(key, spec, rows)


def test_nan_is_refused_null_is_not(tmp_path):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    rows = make_rows(key)
    rows[2]["d1"] = None
    store.write(key, spec, rows)
    rows[0]["score"] = float("nan")
    with pytest.raises(SuiteError, match="'score' has 1 NaN"):
        store.write(key, spec, rows)


def test_bad_key_is_refused(tmp_path):
    store = ResultStore(tmp_path)
    with pytest.raises(SuiteError, match="cell key"):
        store.status("../escape")


# statuses


def test_status_missing_done_failed_and_back(tmp_path):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    assert store.status(key) == "missing" and not store.is_done(key)
    store.write_failure(key, spec, "RuntimeError: out of memory")
    assert store.status(key) == "failed" and not store.parquet_path(key).exists()
    store.write(key, spec, make_rows(key))
    assert store.status(key) == "done" and store.is_done(key)
    store.write_failure(key, spec, "boom")
    assert store.status(key) == "failed"
    assert not store.parquet_path(key).exists()
    with pytest.raises(SuiteError, match="failed, not done"):
        store.read(key)


def test_done_needs_a_readable_parquet_with_the_recorded_rows(tmp_path):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    store.write(key, spec, make_rows(key))
    store.parquet_path(key).unlink()
    assert store.status(key) == "missing"

    store.write(key, spec, make_rows(key))
    store.parquet_path(key).write_bytes(b"not a parquet file")
    assert store.status(key) == "missing"

    store.write(key, spec, make_rows(key))
    pl.DataFrame(make_rows(key, n=2)).write_parquet(store.parquet_path(key))
    assert store.status(key) == "missing"

    store.write(key, spec, make_rows(key))
    store.json_path(key).write_text("{truncated")
    assert store.status(key) == "missing"


def test_done_needs_the_parquet_bytes_of_the_sidecar_checksum(tmp_path):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    store.write(key, spec, make_rows(key))
    assert store.check(key) == ("done", None)
    # same number of rows, other values: only the checksum tells
    pl.DataFrame(make_rows(key, score=0.0)).write_parquet(store.parquet_path(key))
    state, problem = store.check(key)
    assert state == "missing" and "checksum" in problem
    with pytest.raises(SuiteError, match="checksum"):
        store.read(key)
    assert store.read_all().height == 0


def test_a_flipped_byte_in_a_done_parquet_is_damage_not_a_crash(tmp_path):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    store.write(key, spec, make_rows(key))
    assert store.is_done(key)  # verified once, remembered by file identity
    data = bytearray(store.parquet_path(key).read_bytes())
    data[len(data) // 2] ^= 0xFF
    store.parquet_path(key).write_bytes(bytes(data))
    assert ResultStore(tmp_path).check(key)[0] == "missing"
    store.parquet_path(key).unlink()
    assert store.check(key) == ("missing", "its parquet file is missing")


def test_a_done_sidecar_without_a_checksum_counts_as_damaged(tmp_path):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    store.write(key, spec, make_rows(key))
    meta = json.loads(store.json_path(key).read_text())
    del meta["sha256"]
    store.json_path(key).write_text(json.dumps(meta))
    state, problem = store.check(key)
    assert state == "missing" and "no checksum" in problem


def test_a_failed_or_missing_cell_is_not_damaged(tmp_path):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    assert store.check(key) == ("missing", None)
    store.write_failure(key, spec, "boom")
    assert store.check(key) == ("failed", None)


def test_write_overwrites_a_cell(tmp_path):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    store.write(key, spec, make_rows(key, n=3, score=0.0))
    store.write(key, spec, make_rows(key, n=2, score=1.0))
    assert store.read(key)["score"].to_list() == [1.0, 1.0]


# crash safety


def _crash_on_nth_replace(monkeypatch, n: int):
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append(Path(dst).name)
        if len(calls) == n:
            raise OSError("simulated crash")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def test_crash_between_parquet_and_json_leaves_a_missing_cell_and_no_temp_files(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    calls = _crash_on_nth_replace(monkeypatch, 2)
    with pytest.raises(OSError, match="simulated crash"):
        store.write(key, spec, make_rows(key))
    assert calls == [f"{key}.parquet", f"{key}.json"]  # parquet first, json last
    assert store.parquet_path(key).exists()
    assert store.status(key) == "missing"
    assert temp_files(store) == []
    monkeypatch.undo()

    reopened = ResultStore(tmp_path)
    assert reopened.status(key) == "missing" and temp_files(reopened) == []
    reopened.write(key, spec, make_rows(key, n=4))
    assert reopened.is_done(key) and reopened.read(key).height == 4


def test_crash_while_rewriting_a_done_cell_never_leaves_it_done_with_new_rows(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    store.write(key, spec, make_rows(key, n=3))
    _crash_on_nth_replace(monkeypatch, 2)
    with pytest.raises(OSError):
        store.write(key, spec, make_rows(key, n=3, score=0.0))
    assert store.status(key) == "missing"


def test_crash_before_the_parquet_lands_keeps_the_old_parquet_out_of_done(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    store.write(key, spec, make_rows(key))
    _crash_on_nth_replace(monkeypatch, 1)
    with pytest.raises(OSError):
        store.write(key, spec, make_rows(key, score=0.0))
    assert store.status(key) == "missing" and temp_files(store) == []


def test_sigkill_between_the_renames_is_recovered_on_reopen(tmp_path):
    key, spec = spec_with()
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        import suite.store as store_module
        from suite.store import ResultStore
        real = os.replace
        def replace(src, dst):
            if str(dst).endswith(".json"):
                os.kill(os.getpid(), signal.SIGKILL)
            real(src, dst)
        store_module.os.replace = replace
        rows = {make_rows(key)!r}
        ResultStore({str(tmp_path)!r}).write({key!r}, {spec!r}, rows)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == -9, result.stderr.decode()
    cells = tmp_path / "cells"
    assert (cells / f"{key}.parquet").exists()
    assert any(p.name.startswith(TMP_PREFIX) and p.name.endswith(".json") for p in cells.iterdir())

    store = ResultStore(tmp_path)
    assert temp_files(store) == []
    assert store.status(key) == "missing"
    store.write(key, spec, make_rows(key))
    assert store.is_done(key)


def test_clean_partial_spares_live_writers_until_stale(tmp_path):
    store = ResultStore(tmp_path)
    live = temp_path(store.cells / "a.parquet")
    live.write_bytes(b"")
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()
    orphan = live.with_name(live.name.replace(f"{TMP_PREFIX}{os.getpid()}-", f"{TMP_PREFIX}{dead_pid}-", 1))
    orphan.write_bytes(b"")
    assert store.clean_partial() == [orphan]
    assert temp_files(store) == [live.name]
    old = time.time() - 2 * store.stale_after
    os.utime(live, (old, old))
    assert store.clean_partial() == [live]
    assert temp_files(store) == []


def test_crash_between_two_shards_keeps_the_finished_shard(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    key, _ = spec_with()
    store.write_shard(key, 0, 3, make_rows(key))
    _crash_on_nth_replace(monkeypatch, 1)
    with pytest.raises(OSError):
        store.write_shard(key, 3, 6, make_rows(key))
    monkeypatch.undo()
    reopened = ResultStore(tmp_path)
    assert list(reopened.read_shards(key)) == [(0, 3)]
    assert [p.name for p in reopened.shard_dir(key).iterdir() if p.name.startswith(TMP_PREFIX)] == []


def test_a_shard_file_that_does_not_match_its_checksum_is_removed(tmp_path):
    store = ResultStore(tmp_path)
    key, _ = spec_with()
    good = store.write_shard(key, 0, 3, make_rows(key))
    bad = store.write_shard(key, 3, 6, make_rows(key))
    bad.write_bytes(bad.read_bytes()[:-10])
    shards = store.read_shards(key)
    assert list(shards) == [(0, 3)] and shards[(0, 3)]["sample_id"].to_list() == ["s0", "s1", "s2"]
    assert good.exists() and not bad.exists()


def test_crash_after_the_cell_is_written_before_its_shards_are_removed_leaves_a_done_cell(tmp_path):
    store = ResultStore(tmp_path)
    key, spec = spec_with()
    store.write_shard(key, 0, 3, make_rows(key))
    store.write(key, spec, make_rows(key))  # killed here: the shard folder is still there
    assert store.is_done(key) and store.read_shards(key)
    store.drop_shards(key)  # what the next run does for a done cell
    assert not store.shard_dir(key).exists()


# one writer


def test_a_second_lock_on_a_held_folder_fails_with_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from suite.store import ResultStore
        with ResultStore.lock_of({str(tmp_path)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SuiteError, match=rf"in use by another run \(pid {holder.pid} on host") as err:
            ResultStore.lock_of(tmp_path).acquire()
        assert len(str(err.value).splitlines()) == 1
        start = time.monotonic()
        with pytest.raises(SuiteError, match="in use"):
            ResultStore.lock_of(tmp_path).acquire(wait=0.6)
        assert time.monotonic() - start >= 0.5
    finally:
        holder.kill()
        holder.wait()
    with ResultStore.lock_of(tmp_path) as lock:  # the kernel dropped the killed holder's lock
        assert lock.holder()["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_the_lock_file_of_a_dead_run_is_taken_over(tmp_path):
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": int(dead_pid), "host": "x", "hostname": "h"}))
    lock = RunLock(tmp_path / LOCK_NAME).acquire()
    assert lock.holder()["pid"] == os.getpid()
    with pytest.raises(SuiteError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path / LOCK_NAME).acquire()  # another open file description conflicts, even in one process
    lock.release()


# reading everything


def test_read_all_concatenates_done_cells_only(tmp_path):
    store = ResultStore(tmp_path)
    assert store.read_all().schema == pl.Schema(ROW_SCHEMA) and store.read_all().height == 0
    k1, s1 = spec_with(seed=1)
    k2, s2 = spec_with(seed=2, kind="worst")
    k3, s3 = spec_with(seed=3)
    store.write(k1, s1, make_rows(k1, n=2))
    store.write(k2, s2, make_rows(k2, n=3, kind="worst"))
    store.write_failure(k3, s3, "ValueError: bad")
    everything = store.read_all()
    assert everything.height == 5 and everything.schema == pl.Schema(ROW_SCHEMA)
    assert sorted(everything["cell"].unique().to_list()) == sorted([k1, k2])
    assert store.read_all(kind="worst")["cell"].unique().to_list() == [k2]
    assert store.read_all(kind="certified").height == 0
    with pytest.raises(SuiteError, match="kind must be one of"):
        store.read_all(kind="robust")


def test_stray_files_in_the_cells_folder_are_ignored(tmp_path):
    store = ResultStore(tmp_path)
    (store.cells / "notes.v2.json").write_text("{}")
    (store.cells / "README.md").write_text("hi")
    assert store.keys() == [] and store.read_all().height == 0 and store.failures() == []


def test_failures_lists_spec_and_error(tmp_path):
    store = ResultStore(tmp_path)
    k1, s1 = spec_with(seed=1)
    k2, s2 = spec_with(seed=2)
    store.write(k1, s1, make_rows(k1))
    store.write_failure(k2, s2, "Traceback ...\nRuntimeError: CUDA out of memory")
    [failure] = store.failures()
    assert failure["key"] == k2 and failure["spec"] == s2
    assert failure["error"].endswith("CUDA out of memory")


def test_kinds_match_the_design():
    assert KINDS == ("natural", "attack", "worst", "certified", "distance", "minnorm")


def test_a_cell_written_before_the_optional_columns_existed_reads_them_as_null(tmp_path):
    """A store from an older suite (no ``passes``, ``task``, ``ap`` … in its parquet) still reads."""
    from suite.schema import OPTIONAL

    store = ResultStore(tmp_path)
    key, spec = spec_with()
    store.write(key, spec, make_rows(key))
    old = pl.read_parquet(store.parquet_path(key)).drop(list(OPTIONAL))
    old.write_parquet(store.parquet_path(key))
    meta = json.loads(store.json_path(key).read_text())
    meta["sha256"] = hashlib.sha256(store.parquet_path(key).read_bytes()).hexdigest()
    store.json_path(key).write_text(json.dumps(meta))
    assert store.is_done(key)
    frame = store.read(key)
    assert frame.schema == pl.Schema(ROW_SCHEMA)
    assert all(frame[c].null_count() == 3 for c in OPTIONAL)
