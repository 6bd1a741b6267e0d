"""Evaluate one cell on built objects: ``evaluate(cell, metric, dataset, attack) -> rows``.

Plain PyTorch, no Ray, no registry: the caller builds the metric, the dataset and the
attack (``jobs.tasks`` does it inside a Ray task; tests build them directly), so this
module knows only the contracts in :mod:`suite.types`. The rows it returns are
complete: every column of :data:`suite.schema.ROW_SCHEMA`, the cell key included.
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import torch

import suite
from suite.cell import Cell
from suite.errors import SuiteError
from suite.scoring import certified_score, oriented, twoafc_score, worst_score
from suite.types import AttackContract, DistanceAttackContract, MetricContract, Triplets

UNIT_RANGE = (0.0, 1.0)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_metric(metric: MetricContract) -> None:
    """A metric must take the suite's images as they are: ``[0, 1]``, mapped inside if it wants another range."""
    low, high = (float(v) for v in metric.input_range)
    if (low, high) != UNIT_RANGE:
        raise SuiteError(f"metric {metric.name!r} declares input_range ({low:g}, {high:g}); the suite passes "
                         "images in [0, 1]: map them to the network's range inside the metric and declare (0, 1)")


def check_range(batch: Triplets, metric: MetricContract, dataset: str) -> None:
    """Images outside ``[0, 1]`` would give a silently wrong number: they are an error naming the dataset."""
    low = min(float(t.min()) for t in (batch.ref, batch.x0, batch.x1))
    high = max(float(t.max()) for t in (batch.ref, batch.x0, batch.x1))
    if low < UNIT_RANGE[0] - 1e-6 or high > UNIT_RANGE[1] + 1e-6:
        raise SuiteError(f"dataset {dataset!r} gave images with values in [{low:.4g}, {high:.4g}]; metric "
                         f"{metric.name!r} takes images in [0, 1]")


def check_attacked(clean: Triplets, adv: Triplets, cell: Cell, eps: float | None = None) -> None:
    """Reject an attack result outside its threat model (budget ``eps``, default the cell's):
    an impossible result is an error, not a number."""
    eps = cell.eps if eps is None else eps
    tol = 1e-4 * max(eps, 1.0) + 1e-6
    pairs = [("ref", clean.ref, adv.ref), ("x0", clean.x0, adv.x0), ("x1", clean.x1, adv.x1)]
    for which, a, b in pairs:
        delta = (b - a).flatten(1).double()
        size = delta.norm(dim=1) if cell.norm == "l2" else delta.abs().amax(dim=1)
        budget = eps if (which == "ref" or cell.threat == "all") else 0.0
        bad = (size > budget + tol).nonzero().flatten().tolist()
        if bad:
            ids = ", ".join(clean.sample_id[i] for i in bad[:5])
            raise SuiteError(f"attack {cell.attack!r} moved {which} beyond ε={budget:g} ({cell.norm}) on samples {ids}")
        if b.min() < -1e-6 or b.max() > 1 + 1e-6:
            raise SuiteError(f"attack {cell.attack!r} left the [0, 1] image box on {which}")


def _check_attack(cell: Cell, attack) -> None:
    if cell.kind == "minnorm" and not callable(getattr(attack, "radius", None)):
        raise SuiteError(f"cell {cell.describe()}: kind 'minnorm' needs an attack with radius(metric, batch), "
                         f"such as 'minnorm'; got {type(attack).__name__}")
    if cell.kind == "attack" and not isinstance(attack, AttackContract):
        raise SuiteError(f"cell {cell.describe()}: kind 'attack' needs a 2AFC attack with perturb(); "
                         f"got {type(attack).__name__}")
    if cell.kind == "distance" and not isinstance(attack, DistanceAttackContract):
        raise SuiteError(f"cell {cell.describe()}: kind 'distance' needs a distance attack with maximise(); "
                         f"got {type(attack).__name__}")


def evaluate(cell: Cell, metric: MetricContract, dataset, attack=None, *, device: str = "auto",
             on_batch: Callable[[int, int], None] | None = None) -> list[dict]:
    """The complete rows of ``cell`` (one per sample, per budget for certified cells).

    ``dataset`` yields :class:`~suite.types.Triplets` from ``batches(batch_size)``;
    ``attack`` is the built attack for ``attack`` and ``distance`` cells, else ``None``.
    A dataset whose ``task`` is ``retrieval`` is evaluated by :mod:`suite.evaluate_retrieval`.
    ``on_batch(done, total)`` reports progress.
    """
    dev = pick_device(device)
    torch.manual_seed(cell.seed)
    check_metric(metric)
    if getattr(dataset, "task", "2afc") == "retrieval":
        from suite.evaluate_retrieval import evaluate_retrieval

        return evaluate_retrieval(cell, metric.to(dev), dataset, attack, device=dev, on_batch=on_batch)
    _check_attack(cell, attack)
    if cell.kind == "certified" and cell.attack_name != SMOOTHING and not metric.certifiable:
        raise SuiteError(f"metric {metric.name!r} has no certificate; a certified cell needs one")
    metric = metric.to(dev)
    constant = {"metric": cell.metric, "metric_id": cell.metric_id, "dataset": cell.dataset, "split": cell.split,
                "kind": cell.kind, "attack": cell.attack, "threat": cell.threat, "norm": cell.norm,
                "task": "2afc", "suite_version": suite.__version__, "cell": cell.key}
    rows: list[dict] = []
    done = 0
    for batch in dataset.batches(cell.batch_size):
        start = time.perf_counter()
        check_range(batch, metric, cell.dataset)
        batch = batch.to(dev)
        batch_rows = _evaluate_batch(cell, metric, attack, batch)
        share = (time.perf_counter() - start) / len(batch)
        for row in batch_rows:
            row.update(constant, seconds=share)
        rows.extend(batch_rows)
        done += len(batch)
        if on_batch:
            on_batch(done, len(dataset))
    return rows


def _value(t: torch.Tensor | None, i: int) -> float | None:
    return None if t is None else float(t[i])


def _rows(batch: Triplets, eps: float, d0=None, d1=None, score=None, radius=None, reached=None, bound=None,
          passes=None) -> list[dict]:
    """One row per sample of ``batch`` with the per-sample columns (the constant ones come from the cell)."""
    return [{"sample_id": batch.sample_id[i], "judge": float(batch.judge[i]), "eps": float(eps),
             "d0": _value(d0, i), "d1": _value(d1, i), "score": _value(score, i), "radius": _value(radius, i),
             "reached": _value(reached, i), "bound": _value(bound, i), "passes": _value(passes, i),
             "ap": None, "bound_alpha": None, "reached_base": None}
            for i in range(len(batch))]


#: the certification method of a certified cell whose ``attack_name`` says so (the default is Lipschitz)
SMOOTHING = "smoothing"


def _smoothed(cell: Cell, metric: MetricContract, batch: Triplets) -> list[dict]:
    """Certified rows of the randomized-smoothing decision (Cohen et al. 2019; :mod:`suite.smoothed`).

    The certificate is about the *smoothed* decision, not the metric's own: ``score`` is
    the smoothed decision's certified score at each ε (its natural score at ε = 0),
    ``radius`` its certified radius (0 when it abstains), ``passes`` the forward passes
    spent; ``d0``, ``d1`` are the metric's clean distances, for reference.
    """
    from suite.smoothed import certify_smoothed

    options = {k: v for k, v in cell.attack_options.items() if k in ("sigma", "n0", "n", "alpha", "chunk")}
    result = certify_smoothed(metric, batch, threat=cell.threat, seed=cell.seed, **options)
    d0, d1, _ = _scored(metric, batch)
    judge = batch.judge.cpu()
    forwards = result.forwards.to(torch.float64)
    return [row for eps in sorted({0.0, *cell.budgets})
            for row in _rows(batch, eps, d0, d1, result.certified_score(judge, eps), result.radius, passes=forwards)]


def _scored(metric: MetricContract, triplets: Triplets) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        d0, d1 = metric.pair_distances(triplets.ref, triplets.x0, triplets.x1)
    return d0, d1, twoafc_score(*oriented(d0, d1, metric.lower_is_better), triplets.judge)


def at_budget(attack: AttackContract, eps: float) -> AttackContract:
    """The same attack with budget ``eps`` (a shallow copy: attacks keep no per-call state)."""
    out = copy.copy(attack)
    out.eps = float(eps)
    return out


def strictly_flipped(d0: torch.Tensor, d1: torch.Tensor, judge: torch.Tensor) -> torch.Tensor:
    """Samples whose decision sits strictly on the side fewer people chose (or ``j = ½``: nothing to gain).

    Their score is ``min(j, 1 − j)``, the lowest any perturbation can force, so a larger
    budget cannot lower it further and a perturbation inside a smaller ball is inside every
    larger one: the ladder stops attacking them.
    """
    score = twoafc_score(d0, d1, judge)
    return (score <= worst_score(judge)) & ((d0 != d1) | (judge == 0.5))


def _ladder(cell: Cell, metric: MetricContract, attack, batch: Triplets) -> list[dict]:
    """Attack rows at every budget of the cell, smallest first, attacking only the survivors.

    A sample flipped at ε_k keeps its perturbation (inside every larger ball) and is
    counted flipped at every larger ε; the others are attacked again from their clean
    images at the next budget. Curves are monotone by construction.
    """
    adv = batch
    done = torch.zeros(len(batch), dtype=torch.bool, device=batch.judge.device)
    rows = []
    for eps in sorted(cell.budgets):
        active = (~done).nonzero().flatten()
        if len(active):
            attacked = at_budget(attack, eps).perturb(metric, batch.subset(active))
            ref, x0, x1 = adv.ref.clone(), adv.x0.clone(), adv.x1.clone()
            ref[active], x0[active], x1[active] = attacked.ref, attacked.x0, attacked.x1
            adv = batch.with_images(ref, x0, x1)
        check_attacked(batch, adv, cell, eps)
        d0, d1, score = _scored(metric, adv)
        rows.extend(_rows(batch, eps, d0, d1, score))
        done |= strictly_flipped(*oriented(d0, d1, metric.lower_is_better), batch.judge)
    return rows


def _center_smoothed_distance(cell: Cell, metric: MetricContract, attack, batch: Triplets) -> list[dict]:
    """Distance rows whose bound is center smoothing's (``options.bound = "smoothing"``; :mod:`suite.smoothed`).

    Center smoothing (Kumar & Goldstein 2021) bounds the distance between *smoothed*
    embeddings, ``d(f̂(x), f̂(x + δ)) ≤ (1 + β)·R̂ = 3R̂`` for ``‖δ‖₂ ≤ ε`` (β = 2 from the
    approximate minimum enclosing ball; the factor comes from the triangle inequality of the
    output distance, the chordal one for ``1 − cos``), with probability ``≥ 1 − α`` per
    row. Holding it against the base metric's ``d(x, x_adv)`` would compare two different
    functions, so ``reached`` is the matching smoothed quantity:

    - ``bound``: :func:`~suite.smoothed.center_smoothing_bound` at the cell's ε for the clean
      image ``x`` (the trivial 2 for ``1 − cos``, ``inf`` for ℓ2, where ``f̂(x)`` abstains or
      ε is too large for ``n``);
    - ``reached``: the metric's distance between ``f̂(x)`` (that run's center) and
      ``f̂(x_adv)``, center smoothing's center step run on the distance attack's ``x_adv``
      with the same options and its own noise (:func:`~suite.smoothed.smoothed_center`);
      this is the proof's "same procedure at ``x'``", so ``reached ≤ bound`` fails with
      probability at most α per row (``x_adv`` comes from the base metric and never sees
      the noise). Null where ``f̂(x_adv)`` abstains: there is no smoothed embedding there.
      The attack maximises the base distance, not the smoothed one, so ``reached`` is what
      its point achieves, a lower estimate of the smoothed worst case;
    - ``reached_base``: the base ``d(x, x_adv)``; ``bound_alpha``: α; ``passes``: noisy
      images through the metric at ``x`` and at ``x_adv`` (the attack's are not counted).

    A Lipschitz-certifiable metric gets the same rows (its own bound is the default
    ``bound = "lipschitz"`` evaluation: the two side by side compare the bounds). A metric
    without an embedding cannot be center-smoothed: a one-line error before any work.
    Noise is seeded per sample id (``x``) and per ``"<sample id>|attacked"`` (``x_adv``), so
    rows do not depend on the batch or the shard.
    """
    from suite.config import split_distance_options
    from suite.smoothed import center_distance, center_smoothing_bound, detect_output, smoothed_center

    if not getattr(metric, "has_embed", False):
        raise SuiteError(f"cell {cell.describe()}: bound \"smoothing\" (center smoothing) smooths an embedding; "
                         f"metric {metric.name!r} has none")
    options = split_distance_options(cell.attack_options)[1]
    options.pop("bound")
    output = options.pop("output", "auto")
    if output == "auto":
        output = detect_output(metric, batch.ref, batch.x0)
    x_adv = attack.maximise(metric, batch.ref)
    with torch.no_grad():
        base = metric.distance(batch.ref, x_adv)
    keys = list(batch.sample_id)
    here = center_smoothing_bound(metric, batch.ref, cell.eps, output=output, seed=cell.seed, keys=keys, **options)
    options.pop("n", None)
    there = smoothed_center(metric, x_adv, output=output, seed=cell.seed, keys=[f"{k}|attacked" for k in keys],
                            **options)
    reached = center_distance(here.center, there.center, output)
    rows = _rows(batch, cell.eps, reached=reached, bound=here.bound, passes=(here.forwards + there.forwards).double())
    for row, base_i, abstained in zip(rows, base.tolist(), there.abstained.tolist()):
        row.update(reached_base=base_i, bound_alpha=here.alpha, reached=None if abstained else row["reached"])
    return rows


def _evaluate_batch(cell: Cell, metric: MetricContract, attack, batch: Triplets) -> list[dict]:
    if cell.kind == "natural":
        d0, d1, score = _scored(metric, batch)
        return [row for eps in cell.budgets for row in _rows(batch, eps, d0, d1, score)]
    if cell.kind == "attack":
        return _ladder(cell, metric, attack, batch)
    if cell.kind == "certified" and cell.attack_name == SMOOTHING:
        return _smoothed(cell, metric, batch)
    if cell.kind == "certified":
        d0, d1, natural = _scored(metric, batch)
        with torch.no_grad():
            radius = metric.certified_radius(batch.ref, batch.x0, batch.x1, threat=cell.threat)
        return [row for eps in cell.budgets
                for row in _rows(batch, eps, d0, d1, certified_score(natural, radius, batch.judge, eps), radius)]
    if cell.kind == "minnorm":
        radius = attack.radius(metric, batch)
        return _rows(batch, cell.eps, radius=radius)
    if cell.kind == "distance":
        if cell.attack_options.get("bound") == SMOOTHING:
            return _center_smoothed_distance(cell, metric, attack, batch)
        x_adv = attack.maximise(metric, batch.ref)
        with torch.no_grad():
            reached = metric.distance(batch.ref, x_adv)
            bound = metric.distance_bound(batch.ref, cell.eps) if metric.certifiable else None
        rows = _rows(batch, cell.eps, reached=reached, bound=bound)
        for row in rows:  # the metric's own certificate holds exactly (bound_alpha 0)
            row.update(reached_base=row["reached"], bound_alpha=None if bound is None else 0.0)
        return rows
    raise SuiteError(f"unknown evaluation kind {cell.kind!r}")


__all__ = ["check_attacked", "check_metric", "check_range", "evaluate", "pick_device"]
