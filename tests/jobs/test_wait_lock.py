"""A second driver on a results folder another run holds: ``--wait SECONDS`` waits for it (saying so), then
runs; without ``--wait`` it stops at once (tests/jobs/test_grid_at_scale.py)."""

import subprocess
import sys
import textwrap
from pathlib import Path

from jobs.cli import main as cli
from suite.store import RunLock

ROOT = Path(__file__).resolve().parents[2]


def test_a_second_driver_with_wait_runs_once_the_holder_lets_go(ray_cluster, tmp_path, cache_dir, capsys,
                                                                monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    config = tmp_path / "grid.toml"
    config.write_text(textwrap.dedent(f"""
        [run]
        name = "wait"
        results = "{results}"
        batch_size = 4
        [[metrics]]
        name = "l2"
        [[datasets]]
        name = "synthetic-2afc"
        splits = ["test"]
        options = {{ image_size = 16, count = 8 }}
    """))
    release = tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from suite.store import ResultStore
        with ResultStore.lock_of({str(results)!r}):
            print("locked", flush=True)
            deadline = time.monotonic() + 120
            while not Path({str(release)!r}).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        acquire = RunLock.acquire

        def waiting(self, wait=0.0):  # the holder lets go a second after the driver starts to wait
            if wait > 0:
                release.touch()
            return acquire(self, wait)

        monkeypatch.setattr(RunLock, "acquire", waiting)
        code = cli(["run", str(config), "--no-progress", "--wait", "60"])
        err = capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert code == 0, err
    assert "waiting up to 60 s: results folder" in err and "in use by another run" in err, err
    assert len(list((results / "cells").glob("*.parquet"))) == 1
