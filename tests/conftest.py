"""Shared fixtures. One local Ray cluster per test session, bound to 127.0.0.1."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster shared by every test that needs one (2 CPUs, loopback only)."""
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
    yield ray
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
