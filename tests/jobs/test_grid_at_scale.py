"""The grid at scale: shards, kept shards, damaged cells, the lock, bad paths (on the session's Ray cluster), and
Ctrl-C (a driver of its own, in a subprocess)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

from jobs.benchmark import expand, run
from jobs.cli import main as cli
from jobs.shards import Shard, spans
from jobs.tasks import run_cell, run_shard
from suite.atomic import TMP_PREFIX
from suite.config import parse_config
from suite.schema import validate_rows
from suite.store import ResultStore

ROOT = Path(__file__).resolve().parents[2]
VALUES = [c for c in validate_rows([]).columns if c != "seconds"]


def grid(tmp_path, **run_options) -> dict:
    return {
        "run": {"name": "scale", "results": str(tmp_path / "results"), "batch_size": 4, "shard_size": 8,
                **run_options},
        "metrics": [{"name": "l2"}],
        "datasets": [{"name": "synthetic-2afc", "splits": ["test"], "options": {"image_size": 32, "count": 20}}],
        "evaluations": [{"kind": "natural"}, {"kind": "certified", "eps": [0.5, 2.0]},
                        {"kind": "attack", "attack": "pgd", "eps": {"l2": [0.5, 2.0]}, "options": {"steps": 3}}],
    }


def write_toml(path: Path, data: dict) -> Path:
    def value(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + " }"
        return json.dumps(v)

    lines = []
    for key, table in data.items():
        for item in table if isinstance(table, list) else [table]:
            lines.append(f"[[{key}]]" if isinstance(table, list) else f"[{key}]")
            lines.extend(f'"{k}" = {value(v)}' for k, v in item.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_sharded_grid_stores_the_rows_of_unsharded_cells(ray_cluster, tmp_path, cache_dir, one_thread):
    config = parse_config(grid(tmp_path))
    summary = run(config, progress=False)
    assert summary.ok and summary.computed == 3, (summary.failed, summary.violations)
    assert summary.workers and {w["threads"] for w in summary.workers} == {1}  # cpus_per_cell = 1
    store = ResultStore(config.results_dir)
    for cell in expand(config)[0]:
        assert len(spans(20, config.shard_size, cell.batch_size)) == 3
        stored = store.read(cell.key)
        assert stored.select(VALUES).equals(validate_rows(run_cell(cell, device="cpu")).select(VALUES)), cell.kind
    assert not any((config.results_dir / "shards").glob("*/*")), "shards are removed once their cell is written"


def test_more_slots_than_the_cluster_holds_still_finishes_every_metric(ray_cluster, tmp_path, cache_dir):
    """Idle actors of a metric with nothing left give their CPUs to the actors of the next one."""
    data = {**grid(tmp_path, max_in_flight=5, worst_case=False), "evaluations": [{"kind": "natural"}],
            "metrics": [{"name": "l2"}, {"name": "ssim"}, {"name": "psnr"}]}
    summary = run(parse_config(data), progress=False)  # the session's cluster has 2 CPUs
    assert summary.ok and summary.computed == 3


def test_finished_shards_of_an_interrupted_run_are_kept_and_not_computed_again(ray_cluster, tmp_path, cache_dir,
                                                                           one_thread):
    config = parse_config(grid(tmp_path, worst_case=False, check_invariant=False))
    natural = next(c for c in expand(config)[0] if c.kind == "natural")
    store = ResultStore(config.results_dir)
    # what a killed driver leaves: the first shard on disk (marked, to see that it is reused as it is)
    kept = validate_rows(run_shard(Shard(natural, 0, 8), device="cpu")).with_columns(seconds=pl.lit(-1.0))
    store.write_shard(natural.key, 0, 8, kept)
    summary = run(config, progress=False)
    assert summary.ok and summary.computed == 3
    rows = store.read(natural.key)
    assert rows["seconds"].to_list()[:8] == [-1.0] * 8 and (rows["seconds"][8:] >= 0).all()
    assert rows["sample_id"].n_unique() == rows.height == 20
    assert not store.shard_dir(natural.key).exists()


def test_a_damaged_done_cell_is_reported_once_and_computed_again(ray_cluster, tmp_path, cache_dir, capsys):
    config = parse_config({**grid(tmp_path), "evaluations": [{"kind": "natural"}, {"kind": "certified", "eps": [1.0]}]})
    assert run(config, progress=False).ok
    store = ResultStore(config.results_dir)
    natural = next(c for c in expand(config)[0] if c.kind == "natural")
    good = store.read(natural.key)
    good.with_columns(score=1.0 - pl.col("score")).write_parquet(store.parquet_path(natural.key))  # same row count
    capsys.readouterr()
    assert cli(["leaderboard", str(config.results_dir)]) == 0  # a damaged cell never crashes the page
    page_warnings = [line for line in capsys.readouterr().err.splitlines() if "damaged" in line]
    assert len(page_warnings) == 1 and natural.key in page_warnings[0]  # and the page's command says so

    again = run(config, progress=False)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "damaged" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: damaged cell") and natural.key in warnings[0]
    assert "checksum" in warnings[0]
    assert again.ok and again.computed == 1 and len(again.damaged) == 1
    assert store.read(natural.key).select(VALUES).equals(good.select(VALUES))

    third = run(config, progress=False)
    assert third.computed == 0 and not third.damaged and "damaged" not in capsys.readouterr().err


def test_a_second_driver_on_the_same_results_gets_the_lock_message(tmp_path, cache_dir, capsys):
    results = tmp_path / "results"
    results.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from suite.store import ResultStore
        with ResultStore.lock_of({str(results)!r}):
            print("locked", flush=True)
            time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = cli(["run", str(write_toml(tmp_path / "grid.toml", grid(tmp_path))), "--no-progress"])
        err = capsys.readouterr().err.strip()
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: results folder") and f"in use by another run (pid {holder.pid} on host" in err
    assert sorted(p.name for p in results.iterdir()) == [".lock"]  # nothing written by the second driver


def _corrupt_checkpoints(root: Path) -> dict[str, Path]:
    from metrics.lipsim import checkpoint
    from metrics.lipsim.model import LipSimNet
    from metrics.lipsim.presets import preset

    good = checkpoint.save(LipSimNet(preset("tiny")), root / "good")
    weights, config = root / "bad-weights", root / "bad-config"
    shutil.copytree(good, weights)
    (weights / "model.safetensors").write_bytes(b"\x00not safetensors" * 4)
    shutil.copytree(good, config)
    (config / "config.json").write_text('{"channels": "sixteen"}')
    return {"corrupt model.safetensors": weights, "corrupt config.json": config}


def test_bad_results_paths_and_corrupt_checkpoints_end_in_one_line_and_write_nothing(tmp_path, cache_dir, capsys):
    cases = {"results path is a file": grid(tmp_path, results=str(tmp_path / "a-file"))}
    (tmp_path / "a-file").write_text("not a folder")
    for name, weights in _corrupt_checkpoints(tmp_path / "models").items():
        cases[name] = {**grid(tmp_path), "metrics": [{"name": "lipsim", "options": {"weights": str(weights)}}]}
    for name, data in cases.items():
        code = cli(["run", str(write_toml(tmp_path / f"{name}.toml", data)), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2, (name, err)
        assert err.startswith("error: ") and len(err.splitlines()) == 1, (name, err)
        assert not (tmp_path / "results").exists(), name
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_a_read_only_results_folder_ends_in_one_line_and_writes_nothing(tmp_path, cache_dir):
    """Run as another user (``setpriv``) when the tests run as root: root writes into any folder."""
    as_nobody = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: no user for whom a folder is read-only")
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    base = Path(tempfile.mkdtemp(prefix="lipsim-ro-"))
    try:
        results, cache = base / "results", base / "cache"
        results.mkdir()
        cache.mkdir()
        for path, mode in ((base, 0o755), (results, 0o555), (cache, 0o777)):
            path.chmod(mode)
        config = write_toml(base / "grid.toml", grid(base, results=str(results)))
        config.chmod(0o644)
        env = {**os.environ, "LIPSIM_SUITE_CACHE": str(cache), "HOME": str(cache)}
        done = subprocess.run([*as_nobody, sys.executable, "-m", "jobs.cli", "run", str(config), "--no-progress"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        err = done.stderr.strip()
        assert done.returncode == 2, err
        assert err.startswith("error: results folder") and "read-only" in err and len(err.splitlines()) == 1, err
        assert list(results.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _finished_shards(results):
    """Shard files in place (pathlib's glob also matches the store's hidden ``.tmp-…`` files being written)."""
    return [p for p in (results / "shards").glob("*/*.parquet") if not p.name.startswith(TMP_PREFIX)]


def test_ctrl_c_ends_with_130_and_the_interrupted_line_never_a_ray_abort(tmp_path, cache_dir):
    """A terminal's Ctrl-C (SIGINT to the driver's whole process group) while shards are in flight."""
    data = grid(tmp_path, shard_size=4)
    data["metrics"] = [{"name": "ssim"}]
    # 4 cells × 5 shards: when the first shard is done, the other 19 keep the workers busy for seconds more
    data["evaluations"] = [{"kind": "attack", "attack": "pgd", "label": f"pgd-{eps}", "eps": {"l2": [eps]},
                            "options": {"steps": 50}} for eps in (0.25, 0.5, 1.0, 2.0)]
    results = tmp_path / "results"
    env = {**os.environ, "LIPSIM_SUITE_CACHE": str(cache_dir)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "jobs.benchmark", "--config", str(write_toml(tmp_path / "g.toml", data)),
                             "--no-progress"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not _finished_shards(results):
            time.sleep(0.1)
        finished = _finished_shards(results)
        assert finished, "no shard finished in time"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("interrupted: "), err[-3000:]
    for abort in ("task_manager.cc", "Check failed", "Aborted", "Traceback"):
        assert abort not in err, err[-3000:]
    store = ResultStore(results)
    for shard in finished:  # kept, or merged into its cell before the interrupt landed
        assert shard.exists() or store.is_done(shard.parent.name), shard
    assert not (results / ".lock").exists()
