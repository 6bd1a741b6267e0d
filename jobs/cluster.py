"""Joining or starting a Ray cluster, and KEY=VALUE command-line options: shared by every command."""

from __future__ import annotations

import os
import tomllib
from contextlib import contextmanager

from suite.errors import SuiteError

#: Ray reads it when imported: on Linux it is on, and Ray then swaps 127.0.0.1 for the machine's address
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def connect(address: str | None = None, worker_logs: bool = False) -> bool:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local one; True if connected here
    (the caller then calls ``ray.shutdown()``, which also stops a cluster started here)."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=worker_logs)
    else:
        start_local(worker_logs=worker_logs)
    return True


def start_local(num_cpus: int | None = None, worker_logs: bool = False) -> None:
    """Start a one-machine Ray cluster that listens on 127.0.0.1 only, without dashboard or metrics export.

    Ray 2.60 resolves ``127.0.0.1`` to the machine's address on purpose (so that other
    machines could join), and then every gRPC server (GCS, raylet, workers) listens on all
    interfaces. It keeps loopback only while its multi-machine switch is off, so the switch
    is off while this cluster starts: GCS, raylet, workers, the object manager and the agents
    then bind 127.0.0.1, and nothing from outside can reach them. The dashboard is not started
    (a small head process still runs, on 127.0.0.1) and metrics collection is off, so no
    Prometheus exporter listens; the autoscaler's and dashboard head's own metric ports
    follow the node address, 127.0.0.1.
    """
    import ray

    with _single_machine():
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 log_to_driver=worker_logs, _node_ip_address="127.0.0.1",
                 _system_config={"enable_metrics_collection": False})


@contextmanager
def _single_machine():
    """Ray's multi-machine switch off, in this process and in the processes it starts, then back on."""
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(_CLUSTER_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_SWITCH] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_CLUSTER_SWITCH, None)
        else:
            os.environ[_CLUSTER_SWITCH] = saved_env


def parse_option(text: str) -> tuple[str, object]:
    """``key=value`` with the value read as TOML when it parses (numbers, booleans), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SuiteError(f"expected KEY=VALUE; got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip(), parsed
