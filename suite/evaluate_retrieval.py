"""Evaluate one retrieval (copy-detection) cell on built objects: the retrieval half of
:func:`suite.evaluate.evaluate`, which hands a dataset whose ``task`` is ``retrieval`` here.

A retrieval dataset (:mod:`suite.datasets.retrieval`) is a gallery and queries, each query
with its true originals. The gallery is reduced once per cell (or shard) with
``metric.represent``; only the queries move. One row per query (per budget), with the
columns :mod:`suite.schema` describes for retrieval rows:

- ``natural``: ``d0`` = distance to the nearest true match, ``d1`` = to the nearest
  non-match, ``score`` = 1 when a true match ranks first, ``ap`` = the query's average
  precision (:func:`suite.retrieval.average_precision`).
- ``attack`` with an *evasion* attack: the same columns on the attacked query, as a ladder
  over the cell's budgets (a query whose true match already lost rank 1 keeps its
  perturbation at every larger ε: it lies inside every larger ball).
- ``attack`` with a *collision* attack: per query a target gallery item
  (:func:`suite.retrieval.collision_targets`, not one of its matches); ``sample_id`` is
  ``query>target``, ``d0`` the distance to the target, ``d1`` to the nearest other item,
  ``score`` 1 while the target is not the first match (the metric resisted).
- ``certified`` (Lipschitz): ``radius`` = the certified radius of the query's correct
  top-1 match (``metric.certified_match_radius``, :func:`suite.certify.match_radius`),
  ``score`` = 1 when the match is correct and ``radius > ε``.

Recall@1 is the mean of ``score``; mAP the mean of ``ap``; micro-AP is computed by the
leaderboard from ``d0``, ``d1``, ``score`` (:func:`suite.retrieval.micro_average_precision`).
"""

from __future__ import annotations

import time
from typing import Callable

import torch

import suite
from suite import retrieval
from suite.cell import Cell
from suite.errors import SuiteError
from suite.schema import OPTIONAL
from suite.types import Gallery, MetricContract, Queries, RetrievalAttackContract

#: the ``threat`` of a retrieval cell: only the query moves
QUERY_THREAT = "query"


def reduce_gallery(metric: MetricContract, dataset, batch_size: int, device: torch.device) -> Gallery:
    """The gallery's ids and ``metric.represent`` of its images, computed once, ``batch_size`` at a time."""
    reps = []
    with torch.no_grad():
        for images in dataset.gallery_batches(batch_size):
            _check_unit_range(images, metric, dataset.name)
            reps.append(metric.represent(images.to(device)))
    if not reps:
        raise SuiteError(f"dataset {dataset.name!r} split {dataset.split!r} has an empty gallery")
    return Gallery(ids=list(dataset.gallery_ids()), reps=torch.cat(reps))


def _check_unit_range(images: torch.Tensor, metric: MetricContract, dataset: str) -> None:
    low, high = float(images.min()), float(images.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise SuiteError(f"dataset {dataset!r} gave images with values in [{low:.4g}, {high:.4g}]; metric "
                         f"{metric.name!r} takes images in [0, 1]")


def check_query_attack(cell: Cell, clean: Queries, adv: torch.Tensor, eps: float) -> None:
    """An attacked query outside its ε-ball or the image box is an error, not a number."""
    tol = 1e-4 * max(eps, 1.0) + 1e-6
    delta = (adv - clean.images).flatten(1).double()
    size = delta.norm(dim=1) if cell.norm == "l2" else delta.abs().amax(dim=1)
    bad = (size > eps + tol).nonzero().flatten().tolist()
    if bad:
        ids = ", ".join(clean.sample_id[i] for i in bad[:5])
        raise SuiteError(f"attack {cell.attack!r} moved queries beyond ε={eps:g} ({cell.norm}): {ids}")
    if adv.min() < -1e-6 or adv.max() > 1 + 1e-6:
        raise SuiteError(f"attack {cell.attack!r} left the [0, 1] image box")


def _distances(metric: MetricContract, images: torch.Tensor, gallery: Gallery) -> torch.Tensor:
    with torch.no_grad():
        return retrieval.query_distances(metric, images, gallery)


def _match_rows(queries: Queries, eps: float, D: torch.Tensor, radius: torch.Tensor | None = None,
                certified: bool = False) -> list[dict]:
    d_true, d_other, correct = retrieval.top1(D, queries.matches)
    rows = []
    for i in range(len(queries)):
        ap = retrieval.average_precision(D[i], queries.matches[i])
        score = float(correct[i])
        if certified:
            score = float(bool(correct[i]) and float(radius[i]) > eps)
        rows.append({"sample_id": queries.sample_id[i], "judge": None, "eps": float(eps),
                     "d0": _finite(d_true[i]), "d1": _finite(d_other[i]), "score": score,
                     "radius": None if radius is None else float(radius[i]), "reached": None, "bound": None,
                     "passes": None, "ap": None if ap is None else float(ap)})
    return rows


def _finite(value: torch.Tensor) -> float | None:
    """A distance, or null where there is none (a query without a true match has no ``d0``)."""
    v = float(value)
    return v if abs(v) != float("inf") else None


def _evasion(cell: Cell, metric: MetricContract, attack, queries: Queries, gallery: Gallery) -> list[dict]:
    """Evasion rows at every budget, smallest first, attacking only the queries still matched."""
    adv = queries.images
    lost = torch.zeros(len(queries), dtype=torch.bool)
    rows = []
    for eps in sorted(cell.budgets):
        active = (~lost).nonzero().flatten()
        if len(active):
            moved = _at_budget(attack, eps).perturb(metric, queries.subset(active.to(queries.images.device)), gallery)
            adv = adv.clone()
            adv[active.to(adv.device)] = moved.detach()
        check_query_attack(cell, queries, adv, eps)
        D = _distances(metric, adv, gallery)
        rows.extend(_match_rows(queries, eps, D))
        _, _, correct = retrieval.top1(D, queries.matches)
        lost |= ~correct.cpu()
    return rows


def _collision(cell: Cell, metric: MetricContract, attack, queries: Queries, gallery: Gallery) -> list[dict]:
    """Collision rows at every budget: each query pushed towards its target (``score`` 1 = resisted)."""
    targets = retrieval.collision_targets(queries.matches, len(gallery), queries.sample_id, cell.seed)
    targets = targets.to(queries.images.device)
    ids = [f"{q}>{gallery.ids[int(t)]}" for q, t in zip(queries.sample_id, targets.tolist())]
    rows, adv = [], queries.images
    hit = torch.zeros(len(queries), dtype=torch.bool)
    for eps in sorted(cell.budgets):
        active = (~hit).nonzero().flatten()
        if len(active):
            index = active.to(queries.images.device)
            moved = _at_budget(attack, eps).perturb(metric, queries.subset(index), gallery, targets=targets[index])
            adv = adv.clone()
            adv[index] = moved.detach()
        check_query_attack(cell, queries, adv, eps)
        D = _distances(metric, adv, gallery)
        d_target = D.gather(1, targets[:, None]).squeeze(1)
        others = D.clone()
        others.scatter_(1, targets[:, None], float("inf"))
        d_other = others.amin(dim=1)
        framed = (d_target < d_other).cpu()
        for i in range(len(queries)):
            rows.append({"sample_id": ids[i], "judge": None, "eps": float(eps), "d0": float(d_target[i]),
                         "d1": _finite(d_other[i]), "score": float(not framed[i]), "radius": None,
                         "reached": None, "bound": None, "passes": None, "ap": None})
        hit |= framed
    return rows


def _at_budget(attack, eps: float):
    import copy

    out = copy.copy(attack)
    out.eps = float(eps)
    return out


def _certified(cell: Cell, metric: MetricContract, queries: Queries, gallery: Gallery) -> list[dict]:
    if not callable(getattr(metric, "certified_match_radius", None)):
        raise SuiteError(f"metric {metric.name!r} has no certificate for retrieval matches "
                         "(certified_match_radius); a certified retrieval cell needs one")
    D = _distances(metric, queries.images, gallery)
    with torch.no_grad():
        radius = metric.certified_match_radius(queries.images, gallery, queries.matches)
    return [row for eps in sorted({0.0, *cell.budgets})
            for row in _match_rows(queries, eps, D, radius=radius, certified=True)]


def evaluate_retrieval(cell: Cell, metric: MetricContract, dataset, attack=None, *, device: torch.device,
                       on_batch: Callable[[int, int], None] | None = None) -> list[dict]:
    """The complete rows of the retrieval cell ``cell`` (see the module docstring)."""
    if cell.kind not in ("natural", "attack", "certified"):
        raise SuiteError(f"cell {cell.describe()}: retrieval datasets support kinds natural, attack and "
                         f"certified; got {cell.kind!r}")
    if cell.kind == "attack" and not isinstance(attack, RetrievalAttackContract):
        raise SuiteError(f"cell {cell.describe()}: a retrieval dataset needs a retrieval attack "
                         f"(evasion or collision); {cell.attack_name!r} attacks 2AFC triplets")
    if cell.kind == "certified" and cell.attack_name:
        raise SuiteError(f"cell {cell.describe()}: retrieval matches are certified by the Lipschitz "
                         f"certificate only; method {cell.attack_name!r} is not supported for retrieval")
    if cell.kind == "certified" and not metric.certifiable:
        raise SuiteError(f"metric {metric.name!r} has no certificate; a certified cell needs one")
    gallery = reduce_gallery(metric, dataset, cell.batch_size, device)
    constant = {"metric": cell.metric, "metric_id": cell.metric_id, "dataset": cell.dataset, "split": cell.split,
                "kind": cell.kind, "attack": cell.attack, "threat": cell.threat, "norm": cell.norm,
                "task": "retrieval", "suite_version": suite.__version__, "cell": cell.key}
    rows: list[dict] = []
    done = 0
    for queries in dataset.batches(cell.batch_size):
        start = time.perf_counter()
        _check_unit_range(queries.images, metric, cell.dataset)
        queries = queries.to(device)
        if cell.kind == "natural":
            batch_rows = [row for eps in cell.budgets
                          for row in _match_rows(queries, eps, _distances(metric, queries.images, gallery))]
        elif cell.kind == "certified":
            batch_rows = _certified(cell, metric, queries, gallery)
        elif attack.goal == "collision":
            batch_rows = _collision(cell, metric, attack, queries, gallery)
        else:
            batch_rows = _evasion(cell, metric, attack, queries, gallery)
        share = (time.perf_counter() - start) / len(queries)
        for row in batch_rows:
            row.update(constant, seconds=share)
            for column in OPTIONAL:  # complete rows: every column of ROW_SCHEMA
                row.setdefault(column, None)
        rows.extend(batch_rows)
        done += len(queries)
        if on_batch:
            on_batch(done, len(dataset))
    return rows


__all__ = ["QUERY_THREAT", "check_query_attack", "evaluate_retrieval", "reduce_gallery"]
