"""Evaluate one cell of the grid: natural, attacked, certified or distance rows.

Plain PyTorch, no Ray: ``jobs.benchmark`` runs :func:`evaluate_cell` inside a Ray
task; tests call it directly. A cell is one (metric, dataset, split, kind, attack,
threat, norm, ε, seed); the rows follow DESIGN.md's "Result row".
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

import suite
from suite.errors import SuiteError
from suite.scoring import certified_score, twoafc_score
from suite.types import Triplets


@dataclass(frozen=True)
class Cell:
    """The full specification of one cell; its hash is the cell key."""

    metric: str
    metric_name: str
    metric_options: dict[str, Any]
    metric_id: str
    dataset: str
    dataset_options: dict[str, Any]
    split: str
    limit: int | None
    dataset_fp: str
    kind: str
    attack: str = ""
    attack_name: str = ""
    attack_options: dict[str, Any] = field(default_factory=dict)
    threat: str = ""
    norm: str = ""
    eps: float = 0.0
    eps_list: tuple[float, ...] = ()
    seed: int = 0
    batch_size: int = 32

    def spec(self) -> dict[str, Any]:
        out = asdict(self)
        out["eps_list"] = list(self.eps_list)
        out["suite_version"] = suite.__version__
        return out

    def describe(self) -> str:
        parts = [self.metric, f"{self.dataset}/{self.split}", self.kind]
        if self.attack:
            parts.append(self.attack)
        if self.threat:
            parts.append(f"threat={self.threat}")
        if self.norm:
            parts.append(f"{self.norm} ε={self.eps:g}")
        return " ".join(parts)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_metric(name: str, options: dict[str, Any]):
    import metrics

    return metrics.load(name, **options)


def load_dataset(name: str, options: dict[str, Any], split: str, limit: int | None):
    from suite import datasets

    return datasets.load(name, split=split, limit=limit, **options)


def pair_distances(metric, ref: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``d(ref, x0)`` and ``d(ref, x1)``, embedding the reference once when the metric allows it.

    Attacks compute distances through this function too, so a sample's attacked
    score is judged exactly as the attack saw it.
    """
    if metric.has_embed:
        er = metric.embed(ref)
        return metric.compare(er, metric.embed(x0)), metric.compare(er, metric.embed(x1))
    return metric.distance(ref, x0), metric.distance(ref, x1)


def check_attacked(clean: Triplets, adv: Triplets, cell: Cell) -> None:
    """Reject an attack result outside its threat model: an impossible result is an error, not a number."""
    tol = 1e-4 * max(cell.eps, 1.0) + 1e-6
    pairs = [("ref", clean.ref, adv.ref), ("x0", clean.x0, adv.x0), ("x1", clean.x1, adv.x1)]
    for which, a, b in pairs:
        delta = (b - a).flatten(1).double()
        size = delta.norm(dim=1) if cell.norm == "l2" else delta.abs().amax(dim=1)
        budget = cell.eps if (which == "ref" or cell.threat == "all") else 0.0
        bad = (size > budget + tol).nonzero().flatten().tolist()
        if bad:
            ids = ", ".join(clean.sample_id[i] for i in bad[:5])
            raise SuiteError(f"attack {cell.attack!r} moved {which} beyond ε={budget:g} ({cell.norm}) on samples {ids}")
        if b.min() < -1e-6 or b.max() > 1 + 1e-6:
            raise SuiteError(f"attack {cell.attack!r} left the [0, 1] image box on {which}")


def evaluate_cell(cell: Cell, *, device: str = "auto", on_batch: Callable[[int, int], None] | None = None) -> list[dict]:
    """Compute the per-sample rows of ``cell`` (the store adds nothing but the cell key)."""
    dev = pick_device(device)
    torch.manual_seed(cell.seed)
    metric = load_metric(cell.metric_name, cell.metric_options).to(dev)
    dataset = load_dataset(cell.dataset, cell.dataset_options, cell.split, cell.limit)
    attack = None
    if cell.kind in ("attack", "distance"):
        import attacks

        attack = attacks.load(cell.attack_name, norm=cell.norm, eps=cell.eps, threat=cell.threat or "ref",
                              seed=cell.seed, **cell.attack_options)
    rows: list[dict] = []
    done = 0
    for batch in dataset.batches(cell.batch_size):
        start = time.perf_counter()
        batch = batch.to(dev)
        batch_rows = _evaluate_batch(cell, metric, attack, batch)
        elapsed = time.perf_counter() - start
        for row in batch_rows:
            row["seconds"] = elapsed / len(batch)
        rows.extend(batch_rows)
        done += len(batch)
        if on_batch:
            on_batch(done, len(dataset))
    for row in rows:
        row.update(metric=cell.metric, metric_id=cell.metric_id, dataset=cell.dataset, split=cell.split,
                   kind=cell.kind, attack=cell.attack, threat=cell.threat, norm=cell.norm,
                   suite_version=suite.__version__)
        row.setdefault("eps", cell.eps)
    return rows


def _row(sample_id: str, judge, d0, d1, score, radius=None, eps=None) -> dict:
    row = {"sample_id": sample_id, "judge": float(judge), "d0": None if d0 is None else float(d0),
           "d1": None if d1 is None else float(d1), "score": None if score is None else float(score),
           "radius": None if radius is None else float(radius)}
    if eps is not None:
        row["eps"] = float(eps)
    return row


def _evaluate_batch(cell: Cell, metric, attack, batch: Triplets) -> list[dict]:
    ids, judge = batch.sample_id, batch.judge
    if cell.kind == "natural":
        with torch.no_grad():
            d0, d1 = pair_distances(metric, batch.ref, batch.x0, batch.x1)
        score = twoafc_score(d0, d1, judge)
        return [_row(ids[i], judge[i], d0[i], d1[i], score[i]) for i in range(len(batch))]
    if cell.kind == "attack":
        adv = attack.perturb(metric, batch)
        check_attacked(batch, adv, cell)
        with torch.no_grad():
            d0, d1 = pair_distances(metric, adv.ref, adv.x0, adv.x1)
        score = twoafc_score(d0, d1, judge)
        return [_row(ids[i], judge[i], d0[i], d1[i], score[i]) for i in range(len(batch))]
    if cell.kind == "certified":
        with torch.no_grad():
            d0, d1 = pair_distances(metric, batch.ref, batch.x0, batch.x1)
            radius = metric.certified_radius(batch.ref, batch.x0, batch.x1, threat=cell.threat)
        natural = twoafc_score(d0, d1, judge)
        rows = []
        for eps in cell.eps_list:
            score = certified_score(natural, radius, judge, eps)
            rows.extend(_row(ids[i], judge[i], d0[i], d1[i], score[i], radius[i], eps) for i in range(len(batch)))
        return rows
    if cell.kind == "distance":
        x_adv = attack.maximise(metric, batch.ref)
        with torch.no_grad():
            reached = metric.distance(batch.ref, x_adv)
            bound = metric.distance_bound(batch.ref, cell.eps) if metric.certifiable else None
        return [_row(ids[i], judge[i], reached[i], None if bound is None else bound[i], None)
                for i in range(len(batch))]
    raise SuiteError(f"unknown evaluation kind {cell.kind!r}")
