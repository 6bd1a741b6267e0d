"""`ray job submit` against a `ray start --head` cluster runs the grid (the at-scale path)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_runs_the_grid_on_a_started_head(tmp_path, cache_dir):
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "LIPSIM_SUITE_CACHE": str(cache_dir), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    gcs, dashboard = free_port(), free_port()
    config = tmp_path / "submitted.toml"
    config.write_text(f"""
[run]
name = "submitted"
results = "{tmp_path / 'results'}"
[[metrics]]
name = "l2"
[[datasets]]
name = "synthetic-2afc"
options = {{ image_size = 32, count = 16 }}
[[evaluations]]
kind = "natural"
""")
    ray = str(bin_dir / "ray")
    # `--block` in its own process group: the head and everything it starts are stopped by killing that
    # group, leaving the test session's own Ray cluster alone (`ray stop` would kill every Ray process).
    # every port explicit: the test session's own cluster holds Ray's defaults (the agent's 52365 among them)
    ports = [f"--{name}={free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                    "metrics-export-port", "runtime-env-agent-port",
                                                    "ray-client-server-port", "node-manager-port",
                                                    "object-manager-port")]
    head = subprocess.Popen([ray, "start", "--head", "--block", "--num-cpus", "1", "--port", str(gcs),
                             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
                             "--disable-usage-stats", *ports], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        # a `ray job submit` before the dashboard listens costs a CLI start-up (seconds) for nothing: wait for its port
        while time.time() < deadline and head.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", dashboard), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        while True:  # the job agent comes up some seconds after the dashboard
            job = subprocess.run([ray, "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir",
                                  str(ROOT), "--", "python", "-m", "jobs.benchmark", "--config", str(config),
                                  "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
            output = job.stdout + job.stderr
            retry = "No available agent" in output or "Failed to connect" in output or "Connection refused" in output
            if job.returncode == 0 or not retry or time.time() > deadline:
                break
            time.sleep(2)
    finally:
        # SIGTERM reaches every process of the group at once: the GCS and the dashboard are gone within about two
        # seconds, but the raylet, the autoscaler monitor and `ray start --block` then wait a minute for the GCS
        # to come back instead of exiting, so a longer grace period only delays the SIGKILL that ends them anyway
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # `ray start` wrote its address to Ray's "current cluster" file, which `ray stop` would remove: left there,
        # every later address look-up on this machine (Ray Train's placement-group cleaner in the session's
        # cluster, for one) tries the dead head first and hangs
        from ray._common.utils import reset_ray_address
        from ray._private.utils import read_ray_address

        current = read_ray_address()
        if current and current.rsplit(":", 1)[-1] == str(gcs):
            reset_ray_address()
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "1 computed" in job.stdout
    board = pl.read_parquet(tmp_path / "results" / "leaderboard.parquet")
    assert board.filter(pl.col("kind") == "natural")["score"][0] > 50
