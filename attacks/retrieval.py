"""Attacks on copy detection (retrieval): ``evasion`` and ``collision``.

A query moves within its ε-ball ∩ ``[0, 1]`` box; the gallery is fixed (its
representations ``gallery.reps`` are computed once, by the caller). Distances come
from :func:`suite.retrieval.query_distances` (oriented: lower = closer), rank-1
decisions from :func:`suite.retrieval.top1` (a tie is a miss). Per query the adversary
maximises a margin ``a``:

- ``evasion`` (goal ``"evasion"``): ``a = d_true − d_other``, the nearest true original's
  distance minus the nearest non-match's. Success: ``a ≥ 0`` (the true original is no
  longer strictly first; a tie is a miss). A query without a true original is wrong
  already (nothing to do); one that every gallery item matches cannot be made wrong.
- ``collision`` (goal ``"collision"``): given a target gallery index ``t`` per query
  (:func:`suite.retrieval.collision_targets`), ``a = min_{k≠t} d_k − d_t``. Success:
  ``a > 0`` (the target is strictly nearest; a tie does not name it).

Both return, per query, the visited point with the largest margin (the clean query
included), so success is never lost and an attacked query is never better off than
the clean one.
"""

from __future__ import annotations

import torch
from torch import nn

from attacks.autoattack import AA_NORM, quiet_and_isolated
from attacks.base import Attack
from attacks.threat import project, random_start, sample_generators, sample_seed, steepest_direction
from suite import validate
from suite.errors import SuiteError
from suite.registry import register_attack
from suite.retrieval import match_mask, query_distances, top1
from suite.types import Gallery, Queries

GOALS = ("evasion", "collision")
METHODS = ("auto", "pgd", "square")

#: how much farther the target is pretended to be at an exact tie, for Square's ``margin ≤ 0`` rule
_TIE_SHIFT = 1e-6


class RetrievalObjective:
    """The adversary's margin of a batch of queries against a fixed gallery (see the module docstring).

    ``margin(images, rows)``: ``(n,)`` margins of the perturbed queries ``images``, which
    belong to the batch rows ``rows`` (a ``LongTensor``), differentiable in ``images``
    when the metric is. A row's value depends on that row's image alone.
    """

    def __init__(self, metric, queries: Queries, gallery: Gallery, goal: str, targets: torch.Tensor | None):
        self.metric, self.queries, self.gallery, self.goal = metric, queries, gallery, goal
        device = queries.images.device
        n_gallery = len(gallery)
        if goal == "evasion":
            # the decisive set: true originals
            self.mask = match_mask(queries.matches, n_gallery, device)
            #: rows whose decision an adversary can change at all
            self.possible = self.mask.any(1) & (~self.mask).any(1)
        else:
            self.mask = torch.zeros((len(queries), n_gallery), dtype=torch.bool, device=device)
            self.mask[torch.arange(len(queries), device=device), targets.to(device)] = True
            self.possible = torch.full((len(queries),), n_gallery > 1, dtype=torch.bool, device=device)

    def pair(self, images: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d_focus, d_rest)``: (nearest true original, nearest non-match) for evasion,
        (target, nearest other item) for collision."""
        D = query_distances(self.metric, images, self.gallery)
        d_focus, d_rest, _ = top1(D, self.mask[rows])
        return d_focus, d_rest

    def margin(self, images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        d_focus, d_rest = self.pair(images, rows)
        return d_focus - d_rest if self.goal == "evasion" else d_rest - d_focus

    def success(self, margin: torch.Tensor) -> torch.Tensor:
        return margin >= 0 if self.goal == "evasion" else margin > 0


class BestMargin:
    """Per query, the visited point with the largest margin; a point replaces it only when strictly better."""

    def __init__(self, objective: RetrievalObjective, images: torch.Tensor, margin: torch.Tensor):
        self.objective = objective
        self.images = images.detach().clone()
        self.margin = margin.detach().to(torch.float64).clone()

    def update(self, images: torch.Tensor, margin: torch.Tensor, rows: torch.Tensor) -> None:
        margin = margin.detach().to(torch.float64)
        better = margin > self.margin[rows]
        if bool(better.any()):
            at = rows[better]
            self.images[at] = images.detach()[better].to(self.images.dtype)
            self.margin[at] = margin[better]

    def settled(self) -> torch.Tensor:
        """``(B,)`` bool: already successful (nothing left to gain)."""
        return self.objective.success(self.margin)


class _SquareView(nn.Module):
    """Two-class logits of copies of one query for pyautoattack's Square (label 0).

    Square counts a point as a success when ``logit₀ − logit₁ ≤ 0`` and minimises that
    difference. Evasion: ``(−d_true, −d_other)``, so the difference is ``d_other − d_true
    = −a`` and a tie is a success (a miss). Collision: ``(−d_rest, −d_target)``, the
    difference ``d_target − d_rest = −a``, except that at an exact tie the target is
    pushed ``_TIE_SHIFT·(1 + |d_target|)`` away, so a tie is not a success (it does
    not name the target). Every input row is the query ``row`` (Square works on a
    batch of one), so nothing depends on other queries.
    """

    def __init__(self, objective: RetrievalObjective, row: int):
        super().__init__()
        self.objective = objective
        self.row = torch.tensor([row], device=objective.queries.images.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.row.expand(x.shape[0])
        with torch.no_grad():
            d_focus, d_rest = self.objective.pair(x.to(self.objective.queries.images.dtype), rows)
        if self.objective.goal == "evasion":
            logits = torch.stack([-d_focus, -d_rest], dim=1)
        else:
            shift = torch.where(d_focus == d_rest, _TIE_SHIFT * (1 + d_focus.abs()), torch.zeros_like(d_focus))
            logits = torch.stack([-d_rest, -(d_focus + shift)], dim=1)
        return logits.float()


class RetrievalAttack(Attack):
    r"""Base of the retrieval attacks: projected gradient ascent, or Square when there is no gradient.

    Distance measure: ℓ2 or ℓ∞; only the queries move (threat ``"ref"``: the query plays
    the reference's part), each within ε and the ``[0, 1]`` box.

    Method ``pgd`` (Madry et al., 2018): each step moves the queries along the steepest
    ascent direction of the margin (``sign`` of the gradient for ℓ∞, the normalised
    gradient for ℓ2) by ``α = rel_stepsize·ε`` and projects onto the ε-ball ∩ box
    (:func:`attacks.threat.project`). The margin is a difference of two minima, so the
    gradient flows to the two decisive gallery items of the current point; a step
    costs one forward and backward pass of the queries (an embedding metric compares
    with the stored gallery embeddings).

    Method ``square`` (Andriushchenko et al., 2020: pyautoattack's ``SquareAttack``, the
    Square of AutoAttack, with the two-class logit convention of :mod:`attacks.autoattack`,
    see :class:`_SquareView`): gradient-free, for metrics with ``differentiable = False``
    (perceptual hashes). Each query runs alone (a batch of one, so the model always
    knows which query it sees) under its own seed, with pyautoattack's log silenced and
    its global reseeding confined. Its ``attack_single_run`` is called directly, since
    it returns the lowest-margin point even when the attack fails (``perturb`` would
    return the clean input); that point, projected onto the ball ∩ box, is offered to
    the best-point record. ``restarts`` runs with fresh seeds. Square in ℓ2 needs
    images of at least 5×5.

    Early stopping: a query leaves the batch once its best point is a success; the
    following steps and restarts run on the remaining queries only.

    Random streams: a query's random starts (pgd) and its Square seed come from its own
    stream, seeded from ``(seed, sample_id)`` (:func:`attacks.threat.sample_generators`,
    :func:`attacks.threat.sample_seed`), so its result does not depend on the other
    queries of its batch (up to the last bits a batched float kernel may change).

    Arguments:
        norm (str): ``"l2"`` or ``"linf"``. Default ``"l2"``.
        eps (float): maximum perturbation ε of each query, ``[0, 1]`` units. Default ``1.0``.
        threat (str): ``"ref"`` only (the query moves; the gallery is fixed). Default ``"ref"``.
        seed (int): seed of the random starts and of Square. Default ``0``.
        steps (int): pgd steps per restart. Default ``50``.
        rel_stepsize (float | None): pgd step size α as a fraction of ε. Default ``None``,
            meaning ``2.5 / steps`` (as :class:`attacks.pgd.PGD`).
        random_start (bool): pgd starts each restart from a uniform point of the ball;
            without it from the clean query. Default ``True``.
        restarts (int): independent runs (pgd restarts, or Square runs with fresh seeds);
            the best point over all of them is kept. Default ``1``. pgd with more than
            one needs ``random_start``.
        early_stop (bool): drop a query once it is a success. Default ``True``.
        method (str): ``"auto"`` (Square when the metric declares ``differentiable =
            False``, pgd otherwise), ``"pgd"`` or ``"square"``. Default ``"auto"``.
        n_queries (int): Square's query budget per run. Default ``1000``.
        p_init (float): Square's initial fraction of pixels changed, in ``(0, 1]``. Default ``0.8``.

    Shape:
        - queries: :class:`suite.types.Queries`, images ``(B, 3, H, W)`` in ``[0, 1]``.
        - gallery: :class:`suite.types.Gallery` (``reps`` from ``metric.represent``).
        - targets: ``(B,)`` ``LongTensor`` of gallery indices (collision only).
        - output: ``(B, 3, H, W)``, the perturbed queries.

    Examples::

        >>> attack = attacks.load("evasion", norm="l2", eps=0.5, steps=50)
        >>> adv = attack.perturb(metric, queries, gallery)
        >>> targets = suite.retrieval.collision_targets(queries.matches, len(gallery), queries.sample_id, 0)
        >>> adv = attacks.load("collision", eps=0.5).perturb(metric, queries, gallery, targets)
    """

    goal: str = ""
    threats = ("ref",)

    def __init__(self, *, norm: str = "l2", eps: float = 1.0, threat: str = "ref", seed: int = 0,
                 steps: int = 50, rel_stepsize: float | None = None, random_start: bool = True,
                 restarts: int = 1, early_stop: bool = True, method: str = "auto", n_queries: int = 1000,
                 p_init: float = 0.8):
        super().__init__(norm=norm, eps=eps, threat=threat, seed=seed)
        label = self.goal or type(self).__name__
        self.steps = validate.integer(steps, f"{label}: steps", 1)
        self.rel_stepsize = validate.optional_number(rel_stepsize, f"{label}: rel_stepsize", 0)
        self.random_start = validate.boolean(random_start, f"{label}: random_start")
        self.restarts = validate.integer(restarts, f"{label}: restarts", 1)
        self.early_stop = validate.boolean(early_stop, f"{label}: early_stop")
        self.method = validate.choice(method, METHODS, f"{label}: method")
        self.n_queries = validate.integer(n_queries, f"{label}: n_queries", 1)
        self.p_init = validate.number(p_init, f"{label}: p_init", 0, above=True)
        if self.p_init > 1:
            raise SuiteError(f"{label}: p_init must be a finite number in (0, 1]; got {p_init!r}")
        if self.restarts > 1 and not self.random_start and self.method == "pgd":
            raise SuiteError(f"{label}: restarts > 1 needs random_start = true (otherwise every restart is the same run)")

    @property
    def rel_step(self) -> float:
        return 2.5 / self.steps if self.rel_stepsize is None else self.rel_stepsize

    @property
    def needs_gradient(self) -> bool:  # type: ignore[override]
        """Only an explicit ``method = "pgd"`` insists on a gradient (``auto`` falls back to Square)."""
        return self.method == "pgd"

    def method_for(self, metric) -> str:
        """The method used on ``metric``: ``method``, with ``auto`` resolved by ``metric.differentiable``."""
        if self.method != "auto":
            return self.method
        return "pgd" if getattr(metric, "differentiable", True) else "square"

    def check_metric(self, metric) -> None:
        if self.needs_gradient and not getattr(metric, "differentiable", True):
            raise SuiteError(f"{self.name or self.goal}: metric {metric.name!r} has no gradient (it declares "
                             "differentiable = False); use method = \"square\" or \"auto\" (gradient-free)")

    def perturb(self, metric, queries: Queries, gallery: Gallery = None,  # type: ignore[override]
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """The attacked query images ``(B, 3, H, W)`` (see the class docstring)."""
        label = self.name or self.goal
        if not isinstance(queries, Queries) or not isinstance(gallery, Gallery):
            raise SuiteError(f"{label} is a retrieval attack: perturb(metric, queries: Queries, gallery: Gallery"
                             f"{', targets' if self.goal == 'collision' else ''}); got "
                             f"{type(queries).__name__} and {type(gallery).__name__} (2AFC triplets take a 2AFC "
                             "attack such as pgd)")
        self.check_metric(metric)
        if len(gallery) == 0:
            raise SuiteError(f"{label}: the gallery is empty")
        if len(queries.matches) != len(queries) or len(queries.sample_id) != len(queries):
            raise SuiteError(f"{label}: queries need one match list and one sample id per image")
        targets = self._check_targets(queries, gallery, targets)
        objective = RetrievalObjective(metric, queries, gallery, self.goal, targets)
        clean = queries.images.detach()
        all_rows = torch.arange(len(queries), device=clean.device)
        with torch.no_grad():
            best = BestMargin(objective, clean, objective.margin(clean, all_rows))
        self._gradient_evaluations = 0
        if self.eps == 0 or len(queries) == 0:
            return best.images
        if self.method_for(metric) == "square":
            self._square(objective, best)
        else:
            self._gradient_evaluations = self._pgd(objective, best)
        return best.images

    def _check_targets(self, queries: Queries, gallery: Gallery, targets) -> torch.Tensor | None:
        return None

    def _active(self, objective: RetrievalObjective, best: BestMargin) -> torch.Tensor:
        rows = objective.possible & ~best.settled() if self.early_stop else objective.possible.clone()
        return rows.nonzero().flatten()

    def _pgd(self, objective: RetrievalObjective, best: BestMargin) -> int:
        clean, spent = objective.queries.images.detach(), 0
        generators = sample_generators(self.seed, objective.queries.sample_id)
        alpha = self.rel_step * self.eps
        for _ in range(self.restarts):
            rows = self._active(objective, best)
            if rows.numel() == 0:
                break
            center = clean[rows]
            if self.random_start:
                adv = random_start(center, self.eps, self.norm, [generators[i] for i in rows.tolist()])
            else:
                adv = center.clone()
            for _ in range(self.steps):
                adv = adv.detach().requires_grad_()
                margin = objective.margin(adv, rows)
                (grad,) = self.gradient(objective.metric, margin.sum(), (adv,))
                spent += rows.numel()
                best.update(adv, margin, rows)
                if self.early_stop:
                    keep = ~best.settled()[rows]
                    if not bool(keep.all()):
                        rows, adv, grad, center = rows[keep], adv[keep], grad[keep], center[keep]
                        if rows.numel() == 0:
                            break
                with torch.no_grad():
                    adv = project(adv + alpha * steepest_direction(grad, self.norm), center, self.eps, self.norm)
            if rows.numel():
                with torch.no_grad():
                    best.update(adv, objective.margin(adv, rows), rows)
        return spent

    def _square(self, objective: RetrievalObjective, best: BestMargin) -> None:
        from pyautoattack.square import SquareAttack

        clean = objective.queries.images.detach()
        device = clean.device
        for row in self._active(objective, best).tolist():
            x = clean[row:row + 1].float().contiguous()
            y = torch.zeros(1, dtype=torch.long, device=device)
            at = torch.tensor([row], device=device)
            base = sample_seed(self.seed, objective.queries.sample_id[row])
            square = SquareAttack(_SquareView(objective, row), norm=AA_NORM[self.norm], n_queries=self.n_queries,
                                  eps=self.eps, p_init=self.p_init, n_restarts=1, seed=0, verbose=False,
                                  loss="margin", device=device)
            for restart in range(self.restarts):
                with quiet_and_isolated(device):
                    torch.manual_seed((base + restart) % (1 << 63))
                    square.init_hyperparam(x)
                    _, x_best = square.attack_single_run(x, y)
                point = project(x_best.to(clean.dtype).reshape(x.shape), clean[row:row + 1], self.eps, self.norm)
                with torch.no_grad():
                    best.update(point, objective.margin(point, at), at)
                if self.early_stop and bool(best.settled()[row]):
                    break


@register_attack("evasion")
class Evasion(RetrievalAttack):
    r"""Copy-detection evasion: move a query within ε so its true original leaves rank 1.

    Maximises ``d_true − d_other`` on :func:`suite.retrieval.query_distances` (nearest true
    original minus nearest non-match; success at ``≥ 0``, a tie being a miss). Options
    and methods: :class:`RetrievalAttack`. ``targets`` is ignored.
    """

    goal = "evasion"


@register_attack("collision")
class Collision(RetrievalAttack):
    r"""Copy-detection collision: move a query within ε so a chosen gallery item becomes its nearest.

    Given ``targets`` (one gallery index per query, none of its true originals; see
    :func:`suite.retrieval.collision_targets`), maximises ``min_{k≠t} d_k − d_t`` (success
    at ``> 0``: the target strictly nearest). Options and methods: :class:`RetrievalAttack`.
    """

    goal = "collision"

    def _check_targets(self, queries: Queries, gallery: Gallery, targets) -> torch.Tensor:
        label = self.name or self.goal
        if targets is None:
            raise SuiteError(f"{label}: perturb needs targets, one gallery index per query "
                             "(suite.retrieval.collision_targets)")
        t = torch.as_tensor(targets)
        if t.dtype.is_floating_point or t.dtype == torch.bool or t.reshape(-1).numel() != len(queries):
            raise SuiteError(f"{label}: targets must be {len(queries)} integer gallery indices; got "
                             f"{t.dtype} of shape {tuple(t.shape)}")
        t = t.reshape(-1).long()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= len(gallery)):
            raise SuiteError(f"{label}: targets must be gallery indices in [0, {len(gallery)}); got "
                             f"{int(t.min())}…{int(t.max())}")
        for b, (k, row) in enumerate(zip(t.tolist(), queries.matches)):
            if k in {int(m) for m in row}:
                raise SuiteError(f"{label}: target {k} of query {queries.sample_id[b]!r} is one of its true originals")
        return t


__all__ = ["Collision", "Evasion", "GOALS", "METHODS", "RetrievalAttack", "RetrievalObjective"]
