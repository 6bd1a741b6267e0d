"""Shared fixtures. One local Ray cluster, bound to 127.0.0.1, for the tests in tests/jobs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


#: the tests that use the shared cluster live here; it is stopped once the run leaves this folder
RAY_TESTS = Path(__file__).parent / "jobs"


@pytest.fixture
def ray_cluster():
    """A real local Ray cluster shared by the tests that need one (2 CPUs, loopback only): started by the first,
    stopped when the run leaves ``tests/jobs`` (its idle processes took about a tenth of a core from every
    test after them), started again if a later test asks."""
    import ray

    from jobs.cluster import start_local

    if not ray.is_initialized():
        # Ray Train's PlacementGroupCleaner (one per fit, in this cluster) asks the state API whether the
        # controller lives. With no address given, the state API takes the one in Ray's current-cluster file
        # (/tmp/ray/ray_current_cluster), written by the last `ray start` or test-cluster head on the machine and
        # left behind when that head is killed: each ask then blocks for ~40 s on a dead GCS and every fit's end
        # waits 12 s for it. This cluster has no dashboard, so the state API cannot answer anyway; an API address
        # that refuses at once (port 9, which nothing serves) makes each ask fail at once. Only the cluster's own
        # processes get it (the variable is set while they are started).
        saved = os.environ.get("RAY_API_SERVER_ADDRESS")
        os.environ["RAY_API_SERVER_ADDRESS"] = "http://127.0.0.1:9"
        try:
            start_local(num_cpus=2)  # every port on 127.0.0.1, no dashboard, no metrics exporter
        finally:
            if saved is None:
                os.environ.pop("RAY_API_SERVER_ADDRESS", None)
            else:
                os.environ["RAY_API_SERVER_ADDRESS"] = saved
    return ray


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Stop the shared cluster after the last test of ``tests/jobs`` (and at the end of the run)."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized() and (nextitem is None or RAY_TESTS not in Path(nextitem.path).parents):
        ray.shutdown()


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An empty suite cache (synthetic datasets, teacher embeddings) for one test."""
    path = tmp_path / "cache"
    monkeypatch.setenv("LIPSIM_SUITE_CACHE", str(path))
    return path


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread avoids OpenMP spinning against other processes on a 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
