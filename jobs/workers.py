"""Ray actors that keep a loaded metric and evaluate many shards, and the pool that feeds them.

A :class:`ShardWorker` is one metric on one device: it loads the metric once
(:meth:`ShardWorker.load`), then evaluates shard after shard with the process's cached
metric and dataset splits (``jobs/tasks.py``), its torch intra-op threads set to its CPU
share. It receives a :class:`~jobs.shards.Shard` (a small frozen cell and a sample range)
and returns the shard's rows; nothing large travels or is captured.

The :class:`WorkerPool` (driver side) keeps at most ``slots`` actors, one metric each.
Actors are keyed by (metric, GPU share): every actor holds the pool's CPUs and the GPU
share its shards were submitted with (a cell's share, ``suite.config.gpu_share``: the
evaluation's ``num_gpus``, else the metric's, else ``[run] gpus_per_cell``), so two
evaluations of one metric that ask for different GPU shares run on different actors; in
what follows "metric" means such a (metric, GPU share) group. An actor gets shards only
once its metric is loaded, so an actor that cannot be placed (more slots than the cluster
has room for, or a node lost) holds no work. A free actor takes the next shard of its
metric; when its metric has none left while other shards wait, it is retired, which frees
its resources for an actor of a metric that has work. Metrics share the slots (a new actor
goes to the waiting metric with the fewest actors), so an actor is replaced only when its
metric is finished.
Failures:

- an *application error* (the shard's code raised) comes back as an :class:`Outcome`
  with the error; the actor lives on;
- a *system failure* (the worker process or its node died, an OOM kill, a lost object)
  retires the actor and puts the shard back at the head of its queue, to run on a fresh
  actor, up to ``max_retries`` times; the next failure comes back as an :class:`Outcome`
  with ``system=True``. Actors are created with ``max_restarts=0``: the pool, which knows
  which shard was lost, replaces them.
- an error while loading the metric is charged to the first shard waiting for that
  metric (its cell fails as it would have failed in that shard).

Nothing is force-cancelled: :meth:`WorkerPool.close` kills the actors (``ray.kill``),
which is safe at any moment, an interrupt included.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from jobs.shards import Shard


class ShardWorker:
    """One metric on one device, loaded once, evaluating many shards (used as a Ray actor)."""

    def __init__(self, metric_name: str, metric_options: dict[str, Any], device: str, threads: int):
        import torch

        torch.set_num_threads(threads)  # this actor's CPU share, not every core of the node
        self.metric_name, self.metric_options, self.device = metric_name, metric_options, device

    def load(self) -> dict[str, Any]:
        """Build the metric (kept by ``jobs.tasks``' per-process cache); where and how long it took."""
        import ray
        import torch

        from jobs.tasks import build_metric

        start = time.perf_counter()
        build_metric(self.metric_name, self.metric_options)
        return {"metric": self.metric_name, "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "load_seconds": time.perf_counter() - start, "threads": torch.get_num_threads()}

    def run(self, shard: Shard):
        """The validated rows (a polars frame) of ``shard``."""
        from jobs.tasks import run_shard
        from suite.schema import validate_rows

        return validate_rows(run_shard(shard, device=self.device))


@dataclass
class Outcome:
    """What became of a shard: its ``rows``, or the ``error`` that ended it (``system``: the worker died
    ``attempts`` times)."""

    shard: Shard
    rows: Any = None
    error: BaseException | None = None
    system: bool = False
    attempts: int = 1


@dataclass
class _Actor:
    handle: Any
    group: str
    state: str = "loading"  # loading -> idle <-> running
    ref: Any = None
    shard: Shard | None = None
    created: float = 0.0  # time.monotonic() when the driver asked for it


def group_of(shard: Shard, gpus: float = 0.0) -> str:
    """Shards of one metric (name and options) that ask for the same GPU share share actors."""
    return json.dumps([shard.cell.metric_name, shard.cell.metric_options, float(gpus)], sort_keys=True, default=str)


def is_system_failure(err: BaseException) -> bool:
    """A failure of the machinery (a dead worker or node, an OOM kill, a lost object), not of the shard's
    code: worth running again elsewhere."""
    import ray.exceptions as rex

    if isinstance(err, rex.RayTaskError):
        return False
    permanent = (rex.RuntimeEnvSetupError, rex.ActorUnschedulableError, rex.TaskUnschedulableError)
    return isinstance(err, rex.RayError) and not isinstance(err, permanent)


class WorkerPool:
    """At most ``slots`` :class:`ShardWorker` actors fed from one queue of shards per (metric, GPU share).

    Each actor holds ``cpus`` CPUs (its torch threads: their floor, at least 1) and the GPU share of its
    queue: the one given to :meth:`submit`, else ``gpus``."""

    def __init__(self, *, slots: int, cpus: float, gpus: float, device: str, max_retries: int):
        import ray

        self.slots, self.device, self.max_retries = slots, device, max_retries
        self.cpus, self.gpus = cpus, gpus
        self.threads = max(1, math.floor(cpus))
        self._class = ray.remote(ShardWorker)
        self.queues: OrderedDict[str, deque[Shard]] = OrderedDict()
        self.actors: list[_Actor] = []
        self.failures: dict[tuple, int] = {}
        #: shards put back after their worker was lost
        self.retried = 0
        self.dropped: set[str] = set()
        #: what each actor's :meth:`ShardWorker.load` returned (pid, node, load seconds, threads)
        self.loads: list[dict[str, Any]] = []

    def submit(self, shard: Shard, gpus: float | None = None) -> None:
        """Queue ``shard`` for an actor of its metric holding ``gpus`` GPUs (default: the pool's ``gpus``)."""
        self.queues.setdefault(group_of(shard, self.gpus if gpus is None else gpus), deque()).append(shard)

    def drop(self, cell_key: str) -> None:
        """Forget the waiting shards of a cell and ignore what its running shards return."""
        self.dropped.add(cell_key)
        for group, queue in self.queues.items():
            self.queues[group] = deque(s for s in queue if s.cell.key != cell_key)

    @property
    def busy(self) -> bool:
        """Shards are waiting or running."""
        return any(self.queues.values()) or any(a.state == "running" for a in self.actors)

    def wait(self, timeout: float = 1.0) -> list[Outcome]:
        """Start or feed actors, wait up to ``timeout`` seconds for one of them, return what finished."""
        import ray

        self._fill()
        calls = {a.ref: a for a in self.actors if a.ref is not None}
        if not calls:
            return []
        ready, _ = ray.wait(list(calls), num_returns=1, timeout=timeout)
        outcomes = []
        for ref in ready:
            outcomes.extend(self._collect(calls[ref], ref))
        self._fill()
        return [o for o in outcomes if o.shard.cell.key not in self.dropped]

    def close(self) -> None:
        """Kill every actor (a running shard is lost; it is computed again by the next run)."""
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor.handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead, or Ray is going down: nothing left to stop
                pass
        self.actors.clear()

    # scheduling

    def _fill(self) -> None:
        for actor in self.actors:
            queue = self.queues.get(actor.group)
            if actor.state == "idle" and queue:
                self._dispatch(actor, queue.popleft())
        if any(self.queues.values()):  # an idle actor now has nothing of its metric to do: free its resources
            for actor in [a for a in self.actors if a.state == "idle"]:
                self._retire(actor)
        while len(self.actors) < self.slots and (group := self._group_short_of_actors()) is not None:
            self._start(group)

    def _group_short_of_actors(self) -> str | None:
        """A metric with more waiting shards than actors about to take them: of those, the one with the fewest
        actors (the first in grid order on a tie), so that metrics share the slots and an actor retires
        only when its metric has no shard left."""
        short = []
        for order, (group, queue) in enumerate(self.queues.items()):
            mine = [a for a in self.actors if a.group == group]
            if len(queue) > sum(1 for a in mine if a.state == "loading"):
                short.append((len(mine), order, group))
        return min(short)[2] if short else None

    def _start(self, group: str) -> None:
        name, options, gpus = json.loads(group)
        remote = self._class.options(num_cpus=self.cpus, num_gpus=gpus, max_restarts=0, max_task_retries=0)
        handle = remote.remote(name, options, self.device, self.threads)
        self.actors.append(_Actor(handle, group, ref=handle.load.remote(), created=time.monotonic()))

    def _dispatch(self, actor: _Actor, shard: Shard) -> None:
        actor.state, actor.shard, actor.ref = "running", shard, actor.handle.run.remote(shard)

    def _retire(self, actor: _Actor) -> None:
        import ray

        self.actors.remove(actor)
        try:
            ray.kill(actor.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - it is dead already
            pass

    def _collect(self, actor: _Actor, ref) -> list[Outcome]:
        import ray

        loading, shard = actor.state == "loading", actor.shard
        actor.ref, actor.shard, actor.state = None, None, "idle"
        try:
            value = ray.get(ref)
        except Exception as err:  # noqa: BLE001 - sorted into application errors and system failures
            return self._failed(actor, shard, err, loading)
        if loading:  # ready_seconds: asked for → metric loaded (a process started, torch imported, the build)
            self.loads.append({**value, "ready_seconds": time.monotonic() - actor.created})
            return []
        return [Outcome(shard, rows=value)]

    def _failed(self, actor: _Actor, shard: Shard | None, err: BaseException, loading: bool) -> list[Outcome]:
        system = is_system_failure(err)
        if system or loading:
            self._retire(actor)
        if loading:  # nothing ran yet: the first shard waiting for this metric answers for the failure
            queue = self.queues.get(actor.group)
            if not queue:
                return []
            shard = queue.popleft()
        if not system:
            return [Outcome(shard, error=getattr(err, "cause", None) or err)]
        ident = (shard.cell.key, shard.start, shard.stop)
        self.failures[ident] = attempts = self.failures.get(ident, 0) + 1
        if attempts > self.max_retries:
            return [Outcome(shard, error=err, system=True, attempts=attempts)]
        self.queues.setdefault(actor.group, deque()).appendleft(shard)  # next, on a fresh actor of its kind
        self.retried += 1
        return []


__all__ = ["Outcome", "ShardWorker", "WorkerPool", "group_of", "is_system_failure"]
