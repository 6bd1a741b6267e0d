"""GPUs per metric and per evaluation: the config, the share of each cell, the actors it reaches, and the fast
failure of a request the Ray cluster cannot hold (on the session's cluster, which has no GPU here)."""

import time

import pytest

from jobs.benchmark import cell_gpus, expand, gpu_requests, run
from jobs.cli import main as cli
from jobs.cluster import GpuRequest, gpu_problem
from jobs.shards import Shard
from jobs.workers import WorkerPool, group_of
from suite.config import EvalSpec, MetricSpec, gpu_share, parse_config
from suite.errors import SuiteError

DATASET = {"name": "synthetic-2afc", "splits": ["test"], "options": {"image_size": 16, "count": 8}}
BASE = {"metrics": [{"name": "l2"}], "datasets": [DATASET], "evaluations": [{"kind": "natural"}]}


def tiny_toml(tmp_path, *, run: str = "", metric: str = "", evaluation: str = "") -> str:
    path = tmp_path / "gpu.toml"
    path.write_text(f"""
[run]
name = "gpu"
results = "{tmp_path / 'results'}"
batch_size = 4
{run}

[[metrics]]
name = "l2"
{metric}

[[datasets]]
name = "synthetic-2afc"
splits = ["test"]
options = {{ image_size = 16, count = 8 }}

[[evaluations]]
kind = "natural"
{evaluation}
""")
    return str(path)


def cell_files(tmp_path) -> list:
    cells = tmp_path / "results" / "cells"
    return sorted(p.name for p in cells.iterdir()) if cells.exists() else []


def cluster_has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


# the config


def test_num_gpus_is_read_from_metric_and_evaluation_tables():
    cfg = parse_config({**BASE, "metrics": [{"name": "l2", "num_gpus": 1}, {"name": "l2", "label": "other"}],
                        "evaluations": [{"kind": "natural", "num_gpus": 0.25},
                                        {"kind": "attack", "attack": "pgd", "eps": {"l2": [0.5]}}]})
    assert [m.num_gpus for m in cfg.metrics] == [1.0, None]
    assert [e.num_gpus for e in cfg.evaluations] == [0.25, None]
    assert cfg.gpus_per_cell == 0.0


def test_evaluation_wins_over_metric_wins_over_run():
    cfg = parse_config({**BASE, "run": {"gpus_per_cell": 0.5}})
    metric, plain = MetricSpec("dreamsim", "dreamsim", num_gpus=1.0), MetricSpec("l2", "l2")
    autoattack = EvalSpec("attack", "autoattack", "autoattack", num_gpus=0.75)
    natural, cpu = EvalSpec("natural"), EvalSpec("natural", num_gpus=0.0)
    assert gpu_share(cfg, metric, autoattack) == 0.75
    assert gpu_share(cfg, metric, natural) == 1.0
    assert gpu_share(cfg, plain, natural) == 0.5
    assert gpu_share(cfg, metric, cpu) == 0.0  # an explicit 0 is a choice, not "not given"


@pytest.mark.parametrize("where, bad", [
    ("metrics", -1), ("metrics", "1"), ("metrics", True), ("evaluations", float("nan")), ("evaluations", -0.5),
    ("evaluations", 0.00001), ("run", -1)])
def test_bad_gpu_shares_fail_with_one_line_naming_the_table(where, bad):
    data = {**BASE, "metrics": [dict(BASE["metrics"][0])], "evaluations": [dict(BASE["evaluations"][0])]}
    if where == "run":
        data["run"] = {"gpus_per_cell": bad}
    else:
        data[where][0]["num_gpus"] = bad
    message = "gpus_per_cell" if where == "run" else rf"\[\[{where}\]\] #1 num_gpus"
    with pytest.raises(SuiteError, match=message) as info:
        parse_config(data)
    assert "\n" not in str(info.value)


# the share of each cell, and the actors it reaches


def test_each_cell_gets_the_share_of_its_metric_and_evaluation(cache_dir):
    cfg = parse_config({**BASE, "run": {"gpus_per_cell": 0.5},
                        "metrics": [{"name": "l2", "num_gpus": 1}, {"name": "l2", "label": "other"}],
                        "evaluations": [{"kind": "natural"},
                                        {"kind": "attack", "attack": "pgd", "eps": {"l2": [0.5]}, "num_gpus": 0.25}]})
    cells, _ = expand(cfg)
    gpus = cell_gpus(cfg)
    assert {(c.metric, c.kind): gpus[c.key] for c in cells} == {
        ("l2", "natural"): 1.0, ("l2", "attack"): 0.25, ("other", "natural"): 0.5, ("other", "attack"): 0.25}
    assert cell_gpus(parse_config(BASE)) == {}  # nothing set: every cell holds [run] gpus_per_cell


def test_num_gpus_is_not_part_of_the_cell_key(cache_dir):
    plain = expand(parse_config(BASE))[0]
    asking = expand(parse_config({**BASE, "metrics": [{"name": "l2", "num_gpus": 1}],
                                  "evaluations": [{"kind": "natural", "num_gpus": 0.5}]}))[0]
    assert [c.key for c in plain] == [c.key for c in asking]
    assert "num_gpus" not in plain[0].spec()


def test_requests_name_the_pairs_that_have_cells(cache_dir):
    cfg = parse_config({**BASE, "run": {"gpus_per_cell": 0.5},
                        "metrics": [{"name": "l2", "num_gpus": 0}, {"name": "ssim"}],
                        "evaluations": [{"kind": "natural"},
                                        {"kind": "certified", "label": "lipschitz", "eps": [0.5], "num_gpus": 1}]})
    # l2's natural cells ask for no GPU; SSIM has no certificate: its certified evaluation makes no cell and
    # asks for nothing
    assert gpu_requests(cfg) == [GpuRequest("l2", "lipschitz", 1.0),
                                 GpuRequest("ssim", "natural", 0.5, "[run] gpus_per_cell")]
    cfg.metrics[0] = MetricSpec("l2", "l2", num_gpus=0.25)
    assert gpu_requests(cfg)[:2] == [GpuRequest("l2", "natural", 0.25), GpuRequest("l2", "lipschitz", 1.0)]


class _FakeActorClass:
    """Stands for ``ray.remote(ShardWorker)``: records the options each actor is created with."""

    def __init__(self):
        self.options_seen = []

    def options(self, **options):
        self.options_seen.append(options)
        return self

    def remote(self, *args):
        from types import SimpleNamespace

        return SimpleNamespace(load=SimpleNamespace(remote=lambda: None))


def test_the_pool_keys_actors_by_metric_and_gpu_share(cache_dir):
    cfg = parse_config(BASE)
    cell = expand(cfg)[0][0]
    pool = WorkerPool(slots=4, cpus=1.5, gpus=0.5, device="auto", max_retries=0)
    pool._class = fake = _FakeActorClass()
    pool.submit(Shard(cell, 0, 4), 1.0)
    pool.submit(Shard(cell, 4, 8), 0.25)
    pool.submit(Shard(cell, 0, 8))  # no share given: the pool's own
    assert list(pool.queues) == [group_of(Shard(cell, 0, 4), g) for g in (1.0, 0.25, 0.5)]
    for group in list(pool.queues):
        pool._start(group)
    assert [o["num_gpus"] for o in fake.options_seen] == [1.0, 0.25, 0.5]
    assert {o["num_cpus"] for o in fake.options_seen} == {1.5} and pool.threads == 1


# the comparison with what the cluster has (fake resources: no second cluster)


GPU_NODE = {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}}
CPU_NODE = {"Alive": True, "Resources": {"CPU": 8.0}}
DEAD_GPU_NODE = {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 8.0}}


def test_a_cluster_with_gpus_accepts_what_fits_on_one_node():
    requests = [GpuRequest("lipsim", "certified", 0.25), GpuRequest("dreamsim", "autoattack", 2.0)]
    assert gpu_problem(requests, "cuda", {"CPU": 16.0, "GPU": 2.0}, [GPU_NODE, CPU_NODE]) is None
    assert gpu_problem([GpuRequest("l2", "natural", 0.0)], "auto", {"CPU": 2.0}, [CPU_NODE]) is None


def test_a_gpu_request_on_a_cluster_without_gpus_names_the_pair_and_the_cluster():
    requests = [GpuRequest("lipsim", "certified", 0.25), GpuRequest("dreamsim", "autoattack", 1.0)]
    assert gpu_problem(requests, "auto", {"CPU": 16.0}, [CPU_NODE, DEAD_GPU_NODE]) == (
        "metric 'dreamsim' × evaluation 'autoattack' asks for 1 GPU per task; the Ray cluster has 0 GPUs "
        "(start Ray on a GPU node or set num_gpus = 0)")
    from_run = [GpuRequest("l2", "natural", 1.0, "[run] gpus_per_cell")]
    assert "set [run] gpus_per_cell = 0" in gpu_problem(from_run, "auto", {}, [])


def test_a_request_larger_than_any_node_is_refused_even_if_the_cluster_has_enough():
    problem = gpu_problem([GpuRequest("dreamsim", "autoattack", 3.0)], "auto", {"GPU": 4.0}, [GPU_NODE, GPU_NODE])
    assert problem == ("metric 'dreamsim' × evaluation 'autoattack' asks for 3 GPUs per task; the Ray cluster has "
                       "4 GPUs but at most 2 GPUs on one node, and a task runs on one node (set num_gpus = 2 or less)")
    assert "has 4 GPUs (" in gpu_problem([GpuRequest("m", "e", 5.0)], "auto", {"GPU": 4.0}, [GPU_NODE, GPU_NODE])


def test_device_cuda_needs_a_gpu_in_the_cluster():
    assert gpu_problem([], "cuda:0", {"CPU": 2.0}, [CPU_NODE]) == (
        "[run] device = 'cuda:0' but the Ray cluster has 0 GPUs (start Ray on a GPU node or set device = \"auto\")")
    assert gpu_problem([], "cuda", {"GPU": 1.0}, [{"Alive": True, "Resources": {"GPU": 1.0}}]) is None


# on the session's real (GPU-less) Ray cluster


def test_a_gpu_request_on_the_gpu_less_cluster_exits_2_at_once_and_writes_no_cell(ray_cluster, tmp_path, cache_dir,
                                                                                 capsys):
    if cluster_has_gpus():
        pytest.skip("the session's Ray cluster has GPUs")
    start = time.perf_counter()
    code = cli(["run", tiny_toml(tmp_path, evaluation="num_gpus = 1"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and time.perf_counter() - start < 60
    assert err.strip().splitlines() == [
        "error: metric 'l2' × evaluation 'natural' asks for 1 GPU per task; the Ray cluster has 0 GPUs "
        "(start Ray on a GPU node or set num_gpus = 0)"]
    assert cell_files(tmp_path) == []
    assert ray_cluster.is_initialized()  # the session's cluster is left as it was


def test_device_cuda_on_the_gpu_less_cluster_exits_2(ray_cluster, tmp_path, cache_dir, capsys):
    if cluster_has_gpus():
        pytest.skip("the session's Ray cluster has GPUs")
    assert cli(["run", tiny_toml(tmp_path, run='device = "cuda"'), "--no-progress"]) == 2
    assert "[run] device = 'cuda' but the Ray cluster has 0 GPUs" in capsys.readouterr().err
    assert cell_files(tmp_path) == []


def test_an_evaluation_with_num_gpus_0_runs_although_the_run_and_metric_ask_for_gpus(ray_cluster, tmp_path,
                                                                                    cache_dir):
    from suite.config import load_config

    config = load_config(tiny_toml(tmp_path, run="gpus_per_cell = 1", metric="num_gpus = 1",
                                   evaluation="num_gpus = 0"))
    summary = run(config, progress=False)
    assert summary.ok and summary.computed == 1, (summary.failed, summary.violations)
    assert len([f for f in cell_files(tmp_path) if f.endswith(".parquet")]) == 1
