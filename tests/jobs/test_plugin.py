"""An out-of-tree package registers a metric through an entry point; a run evaluates it."""

import os
import subprocess
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]


def test_plugin_metric_installs_and_is_evaluated_by_a_run(tmp_path, cache_dir):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(ROOT / "examples" / "plugin-metric")],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
           "LIPSIM_SUITE_CACHE": str(cache_dir)}
    listing = subprocess.run([sys.executable, "-m", "jobs.cli", "list", "metrics"], cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True).stdout
    assert "l1-example" in listing and "Mean absolute difference" in listing

    config = tmp_path / "plugin.toml"
    config.write_text(f"""
[run]
name = "plugin"
results = "{tmp_path / 'results'}"
[[metrics]]
name = "l1-example"
[[datasets]]
name = "synthetic-2afc"
options = {{ image_size = 32, count = 16 }}
[[evaluations]]
kind = "natural"
""")
    done = subprocess.run([sys.executable, "-m", "jobs.benchmark", "--config", str(config), "--no-progress"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    board = pl.read_parquet(tmp_path / "results" / "leaderboard.parquet")
    row = board.filter(pl.col("metric") == "l1-example")
    assert len(row) == 1 and row["score"][0] > 50
