"""What one Ray task does with a cell: build the metric, dataset and attack through the
registries, then hand the built objects to :func:`suite.evaluate.evaluate`.

Built metrics are kept per worker process (:func:`build_metric`, a small LRU), so a
worker that runs many cells of one metric loads its network once; the driver uses the
same cache to learn each metric's id and certificates.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Callable

from suite.cell import Cell
from suite.evaluate import evaluate

#: built metrics kept per process (a deep metric holds hundreds of MB: keep the cache small)
METRIC_CACHE_SIZE = 4
_metrics: OrderedDict[str, Any] = OrderedDict()


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


def build_attack(kind: str, name: str, options: dict[str, Any], *, norm: str, eps: float, threat: str, seed: int):
    """The 2AFC attack of an ``attack`` or ``minnorm`` cell, or the distance attack of a ``distance`` cell."""
    import attacks

    if kind == "distance":
        return attacks.load_distance(name, norm=norm, eps=eps, seed=seed, **options)
    return attacks.load(name, norm=norm, eps=eps, threat=threat, seed=seed, **options)


def run_cell(cell: Cell, *, device: str = "auto", on_batch: Callable[[int, int], None] | None = None) -> list[dict]:
    """The complete rows of ``cell``, computed on ``device``."""
    metric = build_metric(cell.metric_name, cell.metric_options)
    dataset = build_dataset(cell.dataset, cell.dataset_options, cell.split, cell.limit)
    attack = None
    if cell.kind in ("attack", "distance", "minnorm"):
        attack = build_attack(cell.kind, cell.attack_name, cell.attack_options, norm=cell.norm, eps=cell.eps,
                              threat=cell.threat or "ref", seed=cell.seed)
    return evaluate(cell, metric, dataset, attack, device=device, on_batch=on_batch)


__all__ = ["build_attack", "build_dataset", "build_metric", "run_cell"]
