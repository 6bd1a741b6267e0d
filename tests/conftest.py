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

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
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
