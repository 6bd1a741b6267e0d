"""Joining or starting a Ray cluster, checking that it has the GPUs a run asks for, and KEY=VALUE command-line
options: shared by every command."""

from __future__ import annotations

import os
import tomllib
from contextlib import contextmanager, nullcontext
from typing import NamedTuple

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
        # a cluster started by start_local listens on 127.0.0.1 only: a driver joining it with the multi-machine
        # switch on resolves itself to the machine's address and waits forever for a raylet there. With the
        # switch off it joins both that cluster and a `ray start --head` reached through 127.0.0.1.
        with _single_machine() if _is_loopback(address) else nullcontext():
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


def _is_loopback(address: str) -> bool:
    """``127.0.0.1:6379``, ``localhost:6379``, ``[::1]:6379`` (a GCS address on this machine's loopback)."""
    import ipaddress

    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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



class GpuRequest(NamedTuple):
    """What the cells of one metric × evaluation ask of the cluster: ``gpus`` per task (actor), set by
    ``setting`` (``num_gpus`` of a table, or ``[run] gpus_per_cell``)."""

    metric: str
    evaluation: str
    gpus: float
    setting: str = "num_gpus"


def _gpus(n: float) -> str:
    return f"{n:g} GPU" if n == 1 else f"{n:g} GPUs"


def gpu_problem(requests: list[GpuRequest], device: str, cluster_resources: dict, nodes: list[dict]) -> str | None:
    """Why the Ray cluster described by ``cluster_resources`` (``ray.cluster_resources()``) and ``nodes``
    (``ray.nodes()``) cannot run a grid whose metric × evaluation pairs make ``requests``, on ``device``;
    ``None`` if it can.

    A task runs on one node, so a request must fit the GPUs of the largest live node, not only the
    cluster's total. The largest request is named (the first in config order on a tie). ``device =
    "cuda"`` needs a GPU somewhere in the cluster."""
    total = float(cluster_resources.get("GPU", 0) or 0)
    largest = max((float((n.get("Resources") or {}).get("GPU", 0) or 0) for n in nodes if n.get("Alive", True)),
                  default=total)
    asking = [(r.gpus, -i, GpuRequest(*r)) for i, r in enumerate(requests) if r[2] > 0]
    if asking:
        request = max(asking)[2]
        what = f"metric {request.metric!r} × evaluation {request.evaluation!r} asks for {_gpus(request.gpus)} per task"
        if request.gpus > total:
            fix = "0" if total == 0 else f"{total:g} or less"
            return (f"{what}; the Ray cluster has {_gpus(total)} (start Ray on a GPU node or set "
                    f"{request.setting} = {fix})")
        if request.gpus > largest:
            return (f"{what}; the Ray cluster has {_gpus(total)} but at most {_gpus(largest)} on one node, and a "
                    f"task runs on one node (set {request.setting} = {largest:g} or less)")
    if str(device).startswith("cuda") and total == 0:
        return (f"[run] device = {device!r} but the Ray cluster has 0 GPUs (start Ray on a GPU node or set "
                "device = \"auto\")")
    return None


def check_gpus(requests: list[GpuRequest], device: str) -> None:
    """Raise a one-line :class:`SuiteError` if the connected Ray cluster cannot hold ``requests`` (see
    :func:`gpu_problem`): Ray would keep such actors pending forever."""
    import ray

    problem = gpu_problem(requests, device, ray.cluster_resources(), ray.nodes())
    if problem:
        raise SuiteError(problem)
