"""What a worker does with a cell or a shard of one: build the metric, dataset and attack
through the registries, then hand the built objects to :func:`suite.evaluate.evaluate`.

Built metrics and datasets are kept per process (:func:`build_metric`,
:func:`cached_dataset`: small LRUs), so a worker that runs many shards of one metric
loads its network once and reads each dataset split once; the driver uses the same
metric cache to learn each metric's id and certificates.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Callable

from jobs.shards import SampleRange, Shard
from suite.cell import Cell
from suite.evaluate import evaluate
from suite.types import THREATS

#: built metrics kept per process (a deep metric holds hundreds of MB: keep the cache small)
METRIC_CACHE_SIZE = 4
_metrics: OrderedDict[str, Any] = OrderedDict()
#: built dataset splits kept per process (an index of files, or a small in-memory set)
DATASET_CACHE_SIZE = 4
_datasets: OrderedDict[str, Any] = OrderedDict()


def build_metric(name: str, options: dict[str, Any]):
    """``metrics.load(name, **options)``, built once per process and reused (least recently used goes first)."""
    import metrics

    key = json.dumps([name, options], sort_keys=True, default=str)
    if key in _metrics:
        _metrics.move_to_end(key)
        return _metrics[key]
    metric = metrics.load(name, **options)
    _metrics[key] = metric
    while len(_metrics) > METRIC_CACHE_SIZE:
        _metrics.popitem(last=False)
    return metric


def build_dataset(name: str, options: dict[str, Any], split: str, limit: int | None):
    from suite import datasets

    return datasets.load(name, split=split, limit=limit, **options)


def cached_dataset(name: str, options: dict[str, Any], split: str, limit: int | None):
    """:func:`build_dataset`, built once per process and reused (least recently used goes first)."""
    key = json.dumps([name, options, split, limit], sort_keys=True, default=str)
    if key in _datasets:
        _datasets.move_to_end(key)
        return _datasets[key]
    dataset = build_dataset(name, options, split, limit)
    _datasets[key] = dataset
    while len(_datasets) > DATASET_CACHE_SIZE:
        _datasets.popitem(last=False)
    return dataset


def build_attack(kind: str, name: str, options: dict[str, Any], *, norm: str, eps: float, threat: str, seed: int):
    """The 2AFC attack of an ``attack`` or ``minnorm`` cell, or the distance attack of a ``distance`` cell."""
    import attacks

    if kind == "distance":  # the options of its bound (suite/config.py) are not the attack's
        from suite.config import split_distance_options

        return attacks.load_distance(name, norm=norm, eps=eps, seed=seed, **split_distance_options(options)[0])
    return attacks.load(name, norm=norm, eps=eps, threat=threat, seed=seed, **options)


def attack_of(cell: Cell):
    """The built attack of an ``attack``, ``distance`` or ``minnorm`` cell; ``None`` for the other kinds."""
    if cell.kind not in ("attack", "distance", "minnorm"):
        return None
    return build_attack(cell.kind, cell.attack_name, cell.attack_options, norm=cell.norm, eps=cell.eps,
                        threat=cell.threat if cell.threat in THREATS else "ref", seed=cell.seed)


def run_cell(cell: Cell, *, device: str = "auto", on_batch: Callable[[int, int], None] | None = None) -> list[dict]:
    """The complete rows of ``cell``, computed on ``device``."""
    metric = build_metric(cell.metric_name, cell.metric_options)
    dataset = build_dataset(cell.dataset, cell.dataset_options, cell.split, cell.limit)
    return evaluate(cell, metric, dataset, attack_of(cell), device=device, on_batch=on_batch)


def run_shard(shard: Shard, *, device: str = "auto") -> list[dict]:
    """The complete rows of samples ``[shard.start, shard.stop)`` of ``shard.cell``, computed on ``device``
    with this process's cached metric and dataset."""
    cell = shard.cell
    metric = build_metric(cell.metric_name, cell.metric_options)
    dataset = cached_dataset(cell.dataset, cell.dataset_options, cell.split, cell.limit)
    return evaluate(cell, metric, sample_range(dataset, shard.start, shard.stop), attack_of(cell), device=device)


def sample_range(dataset, start: int, stop: int):
    """Samples (queries) ``[start, stop)`` of a dataset; a retrieval shard keeps the whole gallery."""
    if getattr(dataset, "task", "2afc") == "retrieval":
        return dataset.sample_range(start, stop)
    return SampleRange(dataset, start, stop)


__all__ = ["attack_of", "build_attack", "build_dataset", "build_metric", "cached_dataset", "run_cell", "run_shard"]
