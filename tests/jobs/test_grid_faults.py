"""Faults of the grid, each on a Ray cluster of its own in a subprocess (never the session's cluster):
a worker killed mid-shard, a worker node killed mid-grid. Also: what a local cluster listens on."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl

from jobs.benchmark import expand
from jobs.tasks import run_cell
from suite.config import parse_config
from suite.schema import validate_rows
from suite.store import ResultStore

ROOT = Path(__file__).resolve().parents[2]
VALUES = [c for c in validate_rows([]).columns if c != "seconds"]

KILLER = '''
"""A plugin metric whose first forward pass, in whichever process gets there first, SIGKILLs that process."""
import os
import signal

from metrics.base import EmbeddingMetric


class KillOnce(EmbeddingMetric):
    """Mean absolute difference; the first embed() anywhere kills its own process (the marker file says so)."""

    def __init__(self, marker: str = ""):
        super().__init__()
        self.marker = marker

    def embed(self, x):
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return x.flatten(1)
        os.kill(os.getpid(), signal.SIGKILL)

    def compare(self, ex, ey):
        return (ex - ey).abs().mean(1)


class HoldOnce(KillOnce):
    """The first embed() anywhere writes its Ray node's id to the marker file and holds its shard (sleeps)
    until that node is killed; every other call, and the retry, embeds as KillOnce does."""

    def embed(self, x):
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return x.flatten(1)
        import time
        import ray

        os.write(fd, ray.get_runtime_context().get_node_id().encode())
        os.close(fd)
        time.sleep(120)  # the test kills this node long before
        raise RuntimeError("the node holding the first shard was not killed")
'''


def plugin(tmp_path: Path) -> Path:
    """An installed-looking plugin distribution (module + dist-info with its entry point) on a path."""
    site = tmp_path / "site"
    (site / "kill_once-0.1.dist-info").mkdir(parents=True)
    (site / "kill_once.py").write_text(KILLER)
    (site / "kill_once-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: kill-once\nVersion: 0.1\n")
    (site / "kill_once-0.1.dist-info" / "entry_points.txt").write_text(
        "[lipsim_suite.metrics]\nkill-once = kill_once:KillOnce\nhold-once = kill_once:HoldOnce\n")
    return site


def grid(results: Path, metric: dict, evaluations: list, **run) -> dict:
    return {
        "run": {"name": "faults", "results": str(results), "batch_size": 4, "shard_size": 4, "max_in_flight": 2,
                **run},
        "metrics": [metric],
        "datasets": [{"name": "synthetic-2afc", "splits": ["test"], "options": {"image_size": 16, "count": 16}}],
        "evaluations": evaluations,
    }


def env_with(cache_dir, *paths) -> dict:
    env = {**os.environ, "LIPSIM_SUITE_CACHE": str(cache_dir), "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join([*map(str, paths), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    return env


#: rows of the undisturbed in-process run of each cell (by cell key), computed once per process
_UNDISTURBED: dict[str, pl.DataFrame] = {}


def undisturbed_rows(cell) -> pl.DataFrame:
    """The rows of ``cell`` from an in-process run on one thread (tiny tensors: a second OpenMP thread only
    spins against the other processes of a 2-core machine), computed once per cell and kept."""
    import torch

    if cell.key not in _UNDISTURBED:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _UNDISTURBED[cell.key] = validate_rows(run_cell(cell, device="cpu"))
        finally:
            torch.set_num_threads(threads)
    return _UNDISTURBED[cell.key]


def differences(config: dict) -> list[str]:
    """The cells whose stored rows are not those of an undisturbed in-process run (a row missing, one twice,
    another value); runs where the config's metric is registered."""
    parsed = parse_config(config)
    store = ResultStore(parsed.results_dir)
    wrong = []
    for cell in expand(parsed)[0]:
        rows = store.read(cell.key)
        expected = undisturbed_rows(cell)
        if not (rows.select("sample_id", "eps").is_unique().all() and rows.select(VALUES).equals(expected.select(VALUES))):
            wrong.append(cell.describe())
    return wrong


def test_a_worker_killed_mid_shard_is_replaced_and_the_shard_runs_again(tmp_path, cache_dir):
    """Also: the local cluster the suite starts listens on 127.0.0.1 only."""
    configs = {}
    for retries in (2, 0):
        results = tmp_path / f"results-{retries}"
        configs[retries] = grid(results, {"name": "kill-once", "options": {"marker": str(tmp_path / f"killed-{retries}")}},
                                [{"kind": "natural"}], max_retries=retries)
        (tmp_path / f"grid-{retries}.json").write_text(json.dumps(configs[retries]))
    script = textwrap.dedent(f"""
        import json, sys
        import psutil
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_grid_faults import differences
        from jobs.benchmark import report, run
        from jobs.cluster import start_local
        from suite.config import parse_config

        start_local(num_cpus=2)
        me = psutil.Process()
        ours = {{me.pid, *(p.pid for p in me.children(recursive=True))}}
        listening = sorted({{c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.pid in ours}})
        print("LISTENING", json.dumps(listening), flush=True)
        for retries in (2, 0):
            config = json.load(open({str(tmp_path)!r} + f"/grid-{{retries}}.json"))
            summary = run(parse_config(config), progress=False)
            print("EXIT", retries, report(summary), summary.retried, json.dumps(summary.failed), flush=True)
        print("DIFFERENCES", json.dumps(differences(json.load(open({str(tmp_path)!r} + "/grid-2.json")))))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env_with(cache_dir, plugin(tmp_path)),
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = {line.split()[0] + (line.split()[1] if line.startswith("EXIT") else ""): line.split(maxsplit=1)[1]
             for line in done.stdout.splitlines() if line.startswith(("LISTENING", "EXIT", "DIFFERENCES"))}
    listening = json.loads(lines["LISTENING"])
    assert listening and all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip in listening), listening

    _, code, retried, failed = lines["EXIT2"].split(maxsplit=3)
    assert (code, retried, json.loads(failed)) == ("0", "1", [])  # the killed shard ran again, the run passed
    assert (tmp_path / "killed-2").exists() and json.loads(lines["DIFFERENCES"]) == []

    _, code, retried, failed = lines["EXIT0"].split(maxsplit=3)
    (message,) = json.loads(failed)
    assert (code, retried) == ("1", "0") and "worker lost 1 time on samples" in message, message
    stored = ResultStore(tmp_path / "results-0").failures()
    assert len(stored) == 1 and len(stored[0]["error"].splitlines()) == 1


def test_killing_a_worker_node_mid_grid_loses_no_row_and_duplicates_none(tmp_path, cache_dir):
    """The first shard to start (on whichever node) is held until its node is killed: the kill always lands
    on a shard in flight, which must then run again on another node."""
    results, marker = tmp_path / "results", tmp_path / "held"
    config = grid(results, {"name": "hold-once", "options": {"marker": str(marker)}}, [
        {"kind": "natural"},
        {"kind": "attack", "attack": "pgd", "eps": {"l2": [0.25, 1.0]}, "options": {"steps": 10}},
    ], shard_size=4, max_in_flight=2, max_retries=3)
    (tmp_path / "grid.json").write_text(json.dumps(config))
    script = textwrap.dedent(f"""
        import json, os, sys, threading, time
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every node on 127.0.0.1
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import ray
        from ray.cluster_utils import Cluster
        from test_grid_faults import differences
        from jobs.benchmark import report, run
        from suite.config import parse_config

        # no dashboard (nothing here reads it; it is the busiest process of a head); both nodes start at once
        cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 0, "include_dashboard": False}})
        try:
            workers = [cluster.add_node(num_cpus=1, wait=False) for _ in range(2)]
            cluster.wait_for_nodes()
            marker = {str(marker)!r}

            def kill_the_holding_node():
                while not (os.path.exists(marker) and open(marker).read()):
                    time.sleep(0.05)
                node = next(w for w in workers if w.node_id == open(marker).read())
                cluster.remove_node(node, allow_graceful=False)  # the raylet and its workers die
                print("KILLED", flush=True)
                cluster.add_node(num_cpus=1)  # a replacement node joins

            threading.Thread(target=kill_the_holding_node, daemon=True).start()
            config = json.load(open({str(tmp_path / "grid.json")!r}))
            summary = run(parse_config(config), address=cluster.address, progress=False)
            print("EXIT", report(summary), summary.retried, json.dumps(summary.failed), flush=True)
        finally:
            ray.shutdown()
            cluster.shutdown()
        print("DIFFERENCES", json.dumps(differences(config)), flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env_with(cache_dir, plugin(tmp_path)),
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "KILLED" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    lines = {line.split()[0]: line.split(maxsplit=1)[1] for line in done.stdout.splitlines()
             if line.startswith(("EXIT", "DIFFERENCES"))}
    code, retried, failed = lines["EXIT"].split(maxsplit=2)
    assert code == "0" and json.loads(failed) == [] and int(retried) >= 1, lines["EXIT"]
    assert json.loads(lines["DIFFERENCES"]) == []  # every row present exactly once, with the undisturbed values
    assert pl.read_parquet(results / "leaderboard.parquet").height > 0
