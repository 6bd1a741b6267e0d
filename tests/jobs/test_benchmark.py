"""The grid on a real local Ray cluster: results, resume after a kill, failures, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from jobs.benchmark import expand, run
from jobs.cli import main as cli
from suite.config import load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def small_config(tmp_path, evaluations=None, metrics=None, **run):
    return {
        "run": {"name": "t", "results": str(tmp_path / "results"), "batch_size": 16, **run},
        "metrics": metrics or [{"name": "l2"}, {"name": "ssim"}],
        "datasets": [{"name": "synthetic-2afc", "splits": ["test"], "options": {"image_size": 32, "count": 24}}],
        "evaluations": evaluations or [
            {"kind": "natural"},
            {"kind": "attack", "attack": "pgd", "eps": {"l2": [0.5, 2.0]}, "options": {"steps": 5}},
            {"kind": "certified", "eps": [0.5, 2.0]},
        ],
    }


def write_toml(path: Path, data: dict) -> Path:
    lines = []

    def value(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + " }"
        return json.dumps(v)

    for key, table in data.items():
        if isinstance(table, list):
            for item in table:
                lines.append(f"[[{key}]]")
                lines.extend(f'"{k}" = {value(v)}' for k, v in item.items())
        else:
            lines.append(f"[{key}]")
            lines.extend(f'"{k}" = {value(v)}' for k, v in table.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def test_grid_writes_rows_worst_case_and_leaderboard(ray_cluster, tmp_path, cache_dir):
    config = parse_config(small_config(tmp_path))
    summary = run(config, progress=False)
    assert summary.ok, (summary.failed, summary.violations)
    # 2 metrics × (natural + 1 attack ladder over both ε) + certified for l2 only (ssim has no certificate)
    assert summary.total == 5 and summary.computed == 5
    rows = pl.read_parquet(config.results_dir / "leaderboard.parquet")
    kinds = set(rows["kind"])
    assert {"natural", "attack", "worst", "certified"} <= kinds
    assert (config.results_dir / "leaderboard.html").read_text().count("<table") >= 1
    again = run(config, progress=False)
    assert again.computed == 0 and again.skipped == 5


def test_a_failing_cell_is_recorded_and_the_grid_goes_on(ray_cluster, tmp_path, cache_dir):
    evaluations = [{"kind": "natural"}, {"kind": "attack", "attack": "pgd", "eps": {"l2": [0.5]},
                                         "options": {"steps": 5}}]
    data = small_config(tmp_path, evaluations, metrics=[{"name": "l2"}, {"name": "ssim", "options": {"window": 64}}])
    summary = run(parse_config(data), progress=False)
    assert len(summary.failed) == 2 and summary.computed == 2
    assert "ssim needs images of at least 64" in summary.failed[0]
    status = [json.loads(p.read_text())["status"] for p in (tmp_path / "results" / "cells").glob("*.json")]
    assert sorted(status) == ["done", "done", "done", "failed", "failed"]  # l2: natural, pgd, worst


def test_expand_covers_the_grid_and_keys_change_with_weights(tmp_path, cache_dir):
    config = parse_config(small_config(tmp_path))
    cells, notes = expand(config)
    assert len(cells) == 5
    assert any("ssim" in n and "certificate" in n for n in notes)
    assert len({json.dumps(c.spec(), sort_keys=True) for c in cells}) == 5
    ladder, = [c for c in cells if c.kind == "attack" and c.metric == "l2"]
    assert ladder.budgets == (0.5, 2.0)  # one cell runs every budget of its (attack, threat, norm)


def test_center_smoothing_distance_cells_leave_out_metrics_without_an_embedding(tmp_path, cache_dir):
    """SSIM has no embedding to smooth and PSNR's distance is neither 1 − cos nor an ℓ2 distance of embeddings:
    their cells could only fail, so they are left out with a note; ℓ2 (identity embedding) and LipSim stay."""
    smoothing = {"kind": "distance", "label": "cs", "eps": {"l2": [0.1]},
                 "options": {"steps": 2, "bound": "smoothing", "sigma": 0.25}}
    plain = {"kind": "distance", "label": "lip", "eps": {"l2": [0.1]}, "options": {"steps": 2}}
    metrics = [{"name": "l2"}, {"name": "psnr"}, {"name": "ssim"}, {"name": "lipsim", "options": {"preset": "tiny"}}]
    cells, notes = expand(parse_config(small_config(tmp_path, [smoothing, plain], metrics=metrics)))
    smoothed = {c.metric_name for c in cells if c.attack == "cs"}
    assert smoothed == {"l2", "lipsim"}
    assert {c.metric_name for c in cells if c.attack == "lip"} == {"l2", "psnr", "ssim", "lipsim"}
    assert any(n.startswith("ssim") and "'cs'" in n and "no embedding to smooth" in n for n in notes), notes
    assert any(n.startswith("psnr") and "'cs'" in n and "measures neither" in n for n in notes), notes
    # told which output the metric measures, the config is taken at its word (the cell checks it when it runs)
    smoothing["options"]["output"] = "euclidean"
    cells, _ = expand(parse_config(small_config(tmp_path, [smoothing], metrics=metrics)))
    assert {c.metric_name for c in cells} == {"l2", "psnr", "lipsim"}


def _run_subprocess(config_path, env, address):
    return subprocess.Popen([sys.executable, "-m", "jobs.benchmark", "--config", str(config_path), "--no-progress",
                             "--address", address],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_run_resumes_only_unfinished_cells(ray_cluster, tmp_path, cache_dir, capsys, sig):
    # The interrupted driver joins the session's cluster (a driver of its own would start a Ray cluster first):
    # the interrupt hits the driver, the one process that writes the results folder. The same command run again
    # (in this process, on the same cluster) resumes.
    evaluations = [{"kind": "natural"}] + [
        {"kind": "attack", "attack": "pgd", "label": f"pgd-{eps}", "eps": {"l2": [eps]}, "options": {"steps": 20}}
        for eps in (0.25, 0.5, 1.0, 2.0, 4.0)]
    data = small_config(tmp_path, evaluations, metrics=[{"name": "ssim"}], max_in_flight=1)
    path = write_toml(tmp_path / "grid.toml", data)
    env = {**os.environ, "LIPSIM_SUITE_CACHE": str(cache_dir)}
    address = ray_cluster.get_runtime_context().gcs_address
    cells = tmp_path / "results" / "cells"
    proc = _run_subprocess(path, env, address)
    deadline = time.time() + 180
    while time.time() < deadline and len(list(cells.glob("*.json"))) < 2:
        time.sleep(0.2)
    done_before = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.parquet")}
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert 2 <= len(done_before) < 6, "the run must be interrupted halfway"
    assert not [p for p in cells.iterdir() if p.name.startswith(".tmp")]

    capsys.readouterr()
    code = cli(["run", str(path), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    computed, skipped = map(int, __import__("re").search(r"(\d+) computed, (\d+) already done", out).groups())
    assert computed + skipped == 6
    assert skipped >= len(done_before) and computed == 6 - skipped
    for name, mtime in done_before.items():
        assert (cells / name).stat().st_mtime_ns == mtime, f"{name} was recomputed"


def test_bad_input_exits_non_zero_with_one_line_and_writes_nothing(tmp_path, capsys, cache_dir):
    results = tmp_path / "results"
    cases = {
        "unknown metric": small_config(tmp_path, metrics=[{"name": "lpipz"}]),
        "negative eps": small_config(tmp_path, [{"kind": "attack", "attack": "pgd", "eps": {"l2": [-1.0]}}]),
        "wrong dataset path": {**small_config(tmp_path), "datasets": [{"name": "nights", "options": {"root": str(tmp_path / "nowhere")}}]},
    }
    for name, data in cases.items():
        code = cli(["run", str(write_toml(tmp_path / f"{name}.toml", data)), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2, name
        assert err.startswith("error: ") and len(err.splitlines()) == 1, (name, err)
        assert not results.exists(), name
    assert "did you mean" in (lambda: (cli(["run", str(tmp_path / "unknown metric.toml")]), capsys.readouterr().err)[1])()
    (tmp_path / "broken.toml").write_text("[run\n")
    assert cli(["run", str(tmp_path / "broken.toml")]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_cli_list_prints_each_registry_with_descriptions(capsys):
    assert cli(["list", "metrics"]) == 0
    out = capsys.readouterr().out
    assert "l2" in out and "Euclidean" in out and "ssim" in out


def test_demo_config_is_valid():
    config = load_config(ROOT / "configs" / "demo.toml")
    assert config.train and any(m.from_train for m in config.metrics)


def test_certify_command_writes_certified_rows_for_a_certifiable_metric(ray_cluster, tmp_path, capsys, cache_dir):
    results = tmp_path / "cert"
    code = cli(["certify", "--metric", "lipsim", "--metric-option", "preset=\"tiny\"", "--dataset", "synthetic-2afc",
                "--dataset-option", "image_size=32", "--dataset-option", "count=12", "--eps", "0.05", "1/255",
                "--threat", "ref", "all", "--results", str(results), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    rows = pl.read_parquet(results / "leaderboard.parquet").filter(pl.col("kind") == "certified")
    assert sorted(set(rows["threat"])) == ["all", "ref"] and len(rows) == 4
    assert (rows["score"] <= 100).all() and rows["radius_mean"].is_not_null().all()


def test_leaderboard_command_refuses_a_folder_without_results(tmp_path, capsys):
    assert cli(["leaderboard", str(tmp_path)]) == 2
    assert "holds no results" in capsys.readouterr().err


def test_a_metric_whose_weights_are_missing_is_not_evaluated_and_the_run_still_passes(ray_cluster, tmp_path,
                                                                                       cache_dir):
    from jobs.benchmark import report
    from metrics.base import Metric
    from suite.errors import MissingWeightsError
    from suite.registry import METRICS
    from suite.store import ResultStore

    if "test-no-weights" not in METRICS:
        @METRICS.register("test-no-weights")
        class NoWeights(Metric):
            """A metric whose weights file is never there."""

            def __init__(self):
                raise MissingWeightsError("test-tag", "net.pth", ["/nowhere/test-tag/net.pth"])

    config = parse_config(small_config(tmp_path, metrics=[{"name": "l2"}, {"name": "test-no-weights"}],
                                       evaluations=[{"kind": "natural"}]))
    summary = run(config, progress=False)
    assert summary.ok and summary.computed == 1 and summary.total == 1
    assert len(summary.not_evaluated) == 1 and "expected net.pth in /nowhere/test-tag/net.pth" in summary.not_evaluated[0]
    assert report(summary) == 0
    entry, = ResultStore(config.results_dir).not_evaluated()
    assert entry["spec"]["metric"] == "test-no-weights" and "lipsim weights fetch test-tag" in entry["error"]
    page = (config.results_dir / "leaderboard.html").read_text()
    assert "Not evaluated (1)" in page and "expected net.pth" in page


def test_a_not_evaluated_entry_goes_once_the_metric_can_be_evaluated(tmp_path):
    from jobs.benchmark import Summary, not_evaluated_key, record_not_evaluated
    from suite.errors import MissingWeightsError
    from suite.store import ResultStore

    config = parse_config(small_config(tmp_path, metrics=[{"name": "l2"}]))
    store, spec = ResultStore(tmp_path / "store"), config.metrics[0]
    record_not_evaluated(config, {"l2": MissingWeightsError("t", "f", ["p"])}, store, Summary(tmp_path))
    assert store.status(not_evaluated_key(spec)) == "not-evaluated"
    record_not_evaluated(config, {}, store, Summary(tmp_path))
    assert store.status(not_evaluated_key(spec)) == "missing" and store.not_evaluated() == []


def test_a_metric_with_random_weights_says_so_in_every_row_label(tmp_path, cache_dir):
    config = parse_config(small_config(tmp_path, metrics=[{"name": "lpips", "options": {"pretrained": False}}],
                                       evaluations=[{"kind": "natural"}]))
    cells, _ = expand(config)
    assert [c.metric for c in cells] == ["lpips (random weights)"]
