"""AutoAttack (pyautoattack) on the two-class view of the 2AFC decision."""

from __future__ import annotations

import contextlib
import logging
import sys

import torch
from torch import nn

from attacks.base import Attack
from attacks.objective import MostDamaging, TwoAFCObjective
from attacks.threat import project
from suite import validate
from suite.errors import SuiteError
from suite.registry import register_attack
from suite.types import Triplets

#: sub-attacks that are defined for a two-class problem, in AutoAttack's order
TWO_CLASS_ATTACKS = ("apgd-ce", "square")

#: why the other AutoAttack sub-attacks are refused here
REFUSED = {
    "apgd-dlr": "the DLR loss is normalised by the gap between the largest and third-largest logit: it needs ≥ 3 classes",
    "apgd-t": "targeted DLR uses the third and fourth largest logits and targets other than the label: it needs ≥ 4 classes",
    "fab-t": "with two classes the only target is the other class, so FAB-T is untargeted FAB (see 'fab')",
    "fab": "FAB is a minimum-norm attack whose iterates leave the ε-ball, and the two-class view identifies "
           "the triplet of each query by the clean reference within ε of it",
}

#: our norm names in pyautoattack's spelling (shared with the retrieval attacks' Square)
AA_NORM = {"l2": "L2", "linf": "Linf"}

#: how far beyond ε a point pyautoattack returns may lie (its float32 clipping and normalisations)
_REL_SLACK, _ABS_SLACK = 1e-4, 1e-5


def _cdist(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """Exact pairwise ℓ2/ℓ∞ distances of the rows of ``a`` and ``b`` in float64 (no ‖a‖²+‖b‖²−2ab shortcut)."""
    p = 2.0 if norm == "l2" else float("inf")
    return torch.cdist(a.double(), b.double(), p=p, compute_mode="donot_use_mm_for_euclid_dist")


def separated_groups(refs: torch.Tensor, norm: str, radius: float) -> list[list[int]]:
    """Greedy partition of the rows of ``refs`` into groups whose members are more than ``2·radius`` apart.

    ℓ2 distances come from the float64 Gram expansion ``‖a‖² + ‖b‖² − 2⟨a, b⟩`` (one
    matrix product); its rounding error is far below ``10⁻⁹(‖a‖² + ‖b‖²)``, and pairs
    within that slack of the threshold count as close, which can only split groups
    further. ℓ∞ distances are computed exactly.
    """
    flat = refs.flatten(1).double()
    if norm == "l2":
        sq = flat.pow(2).sum(1)
        scale = sq[:, None] + sq[None, :]
        far = scale - 2 * flat @ flat.T > (2 * radius) ** 2 + 1e-9 * scale + 1e-12
    else:
        far = _cdist(flat, flat, norm) > 2 * radius
    groups: list[list[int]] = []
    for i in range(refs.shape[0]):
        for group in groups:
            if bool(far[i, group].all()):
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


class ReferenceView(nn.Module):
    """Two-class logits ``(−d0, −d1)`` of perturbed references; the candidates never enter the input.

    ``members`` are batch indices whose clean references are pairwise more than
    ``2·radius`` apart, so at most one of them lies within ``radius`` of any query. A
    query is assigned to that member, and compared with its clean candidates. The
    nearest reference in ℓ2 (one matrix product) is only a guess; the assignment is
    the exact check ``‖q − r‖ ≤ radius`` in the attack norm, with an exact search over
    all members for the rare query whose guess fails it. A query with no member within
    ``radius`` is an error, never a guess.
    """

    def __init__(self, objective: TwoAFCObjective, members: torch.Tensor, norm: str, radius: float):
        super().__init__()
        self.objective, self.members, self.norm, self.radius = objective, members, norm, radius
        self.refs = objective.batch.ref[members].flatten(1)
        self.refs_sq = self.refs.pow(2).sum(1)

    def owners(self, q: torch.Tensor) -> torch.Tensor:
        flat = q.detach().flatten(1).to(self.refs.dtype)
        guess = (self.refs_sq - 2 * flat @ self.refs.T).argmin(1)
        delta = flat.double() - self.refs[guess].double()
        size = delta.norm(dim=1) if self.norm == "l2" else delta.abs().amax(dim=1)
        missed = (size > self.radius).nonzero().flatten()
        if missed.numel():
            inside = _cdist(flat[missed], self.refs, self.norm) <= self.radius
            count = inside.sum(1)
            if bool((count != 1).any()):
                raise SuiteError(f"autoattack queried a point with {int(count.min())}–{int(count.max())} clean "
                                 f"references within ε={self.radius:g}; expected exactly one (this is a bug)")
            guess[missed] = inside.int().argmax(1)
        return self.members[guess]

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        owner = self.owners(q)
        d0, d1 = self.objective.distances((q.to(self.refs.dtype),), owner)
        return torch.stack([-d0, -d1], dim=1)


class StackedView(nn.Module):
    """Two-class logits ``(−d0, −d1)`` of triplets stacked as ``(n, 9, H, W)`` channels (threat ``all``)."""

    def __init__(self, objective: TwoAFCObjective, dtype: torch.dtype):
        super().__init__()
        self.objective, self.dtype = objective, dtype

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        d0, d1 = self.objective.distances(q.to(self.dtype).split(3, dim=1))
        return torch.stack([-d0, -d1], dim=1)


@contextlib.contextmanager
def quiet_and_isolated(device: torch.device):
    """Silence pyautoattack's logger, keep its global reseeding and its ``sys.settrace(None)`` from leaking."""
    logger = logging.getLogger("auto-attack")
    disabled, tracer = logger.disabled, sys.gettrace()
    logger.disabled = True
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        logger.disabled = disabled
        sys.settrace(tracer)


@register_attack("autoattack", aliases=("aa",))
class AutoAttack(Attack):
    r"""AutoAttack in "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks" (Croce & Hein, ICML 2020), through ``pyautoattack``.

    Distance measure: ℓ2 or ℓ∞. The 2AFC decision is a two-class classifier with logits
    ``(−d0, −d1)`` (class 1: the metric finds ``x1`` closer) and label ``1`` when
    ``j > ½``, ``0`` when ``j < ½``: AutoAttack's misclassification is exactly a
    decision for the option fewer people chose. Samples with ``j = ½`` have nothing to
    lose and are not attacked (they stay clean, score ½).

    Sub-attacks. The "standard" version (APGD-CE, APGD-T, FAB-T, Square) needs ≥ 4
    classes; this attack runs version ``custom`` with the subset defined for two
    classes, APGD-CE then Square, with the original AutoAttack settings (APGD: 100
    iterations, 1 restart, ρ = 0.75, as the standard version sets for ℓ∞/ℓ2; Square:
    5000 queries, p_init = 0.8). ``apgd-dlr`` and ``apgd-t`` need three and four
    classes, ``fab-t`` has only one target on two classes (it is FAB), and ``fab``
    queries points outside the ε-ball, which the design below excludes: asking for
    any of them is an error.

    Design (threat ``ref``). AutoAttack runs every sub-attack on shrinking subsets of
    the batch and calls the model on them, so a model that closes over per-sample
    state aligned with the batch silently compares a reference with another
    triplet's candidates. And Square (and every random start) perturbs every input
    coordinate, so candidates packed into the input would move and spend budget.
    Here AutoAttack sees only the references, ``(n, 3, H, W)``; the candidates stay
    outside, exactly clean. The model finds the triplet of each query by geometry:

    1. the attacked samples are split greedily into groups whose clean references
       are pairwise more than ``2ε'`` apart in the attack norm
       (``ε' = ε(1 + 10⁻⁴) + 10⁻⁵`` absorbs pyautoattack's float32 rounding);
       duplicated references land in different groups;
    2. AutoAttack runs once per group. Each of its queries ``q`` is within ε' of the
       clean reference ``r_i`` of the sample it belongs to (APGD and Square only
       evaluate projected points), and for any other member ``k`` the triangle
       inequality gives ``‖q − r_k‖ ≥ ‖r_i − r_k‖ − ‖q − r_i‖ > 2ε' − ε' = ε'``;
    3. so ``i`` is the unique member within ε' of ``q``: the model guesses it as the
       nearest reference (one matrix product), accepts the guess only after checking
       ``‖q − r_i‖ ≤ ε'`` exactly (float64, attack norm), searches all members exactly
       when the check fails, and raises if none is within ε', so a broken assumption
       can never turn into a wrong number. It then takes that member's clean
       candidate embeddings (or images).

    Nothing is aligned with a batch, so any subset, order or size is handled; the
    returned candidates are the clean tensors. When ε is large compared with the
    spread of the references the groups shrink, down to one sample per AutoAttack run.

    Threat ``all`` (``linf`` only): the input is the triplet stacked as ``(n, 9, H, W)``;
    the ℓ∞ ball of the stack is exactly the product of the three images' ℓ∞ balls, so
    AutoAttack's own projection is the threat model and the input carries everything
    the model needs. For ℓ2 the ball of the stack is not the product of three balls
    (radius ε over-restricts, √3·ε over-spends), so ``all`` with ``l2`` is refused.

    Afterwards every returned point is projected onto its ε-ball ∩ box (a no-op up to
    rounding), re-evaluated, and kept only where it is more damaging than the clean
    input. pyautoattack's log is silenced, its global reseeding is confined, and the
    trace function its dynamic-defence check clears is restored. Images smaller
    than 5×5 cannot be attacked by Square in ℓ2.

    Arguments:
        norm (str): ``"l2"`` or ``"linf"``. Default ``"l2"``.
        eps (float): maximum perturbation ε. Default ``1.0``.
        threat (str): ``"ref"``, or ``"all"`` with ``linf``. Default ``"ref"``.
        seed (int): seed of every sub-attack. Default ``0``.
        attacks (list[str]): sub-attacks, a subset of ``["apgd-ce", "square"]``, run in the
            given order. Default ``["apgd-ce", "square"]``.
        n_iter (int): APGD iterations. Default ``100``.
        restarts (int): APGD restarts. Default ``1``.
        n_queries (int): Square queries. Default ``5000``.

    Shape:
        - batch: :class:`suite.types.Triplets`, images ``(B, 3, H, W)`` in ``[0, 1]``, ``judge`` ``(B,)``.
        - output: :class:`suite.types.Triplets` of the same shapes.

    Examples::

        >>> attack = attacks.load("autoattack", norm="linf", eps=4 / 255, n_iter=20, n_queries=200)
        >>> adv = attack.perturb(metric, batch)
    """

    def __init__(self, *, norm: str = "l2", eps: float = 1.0, threat: str = "ref", seed: int = 0,
                 attacks=TWO_CLASS_ATTACKS, n_iter: int = 100, restarts: int = 1, n_queries: int = 5000):
        super().__init__(norm=norm, eps=eps, threat=threat, seed=seed)
        if threat == "all" and norm == "l2":
            raise SuiteError("autoattack: threat 'all' needs norm 'linf' (one ℓ2 ball over the stacked "
                             "triplet is not three ε-balls); use pgd or mia for ℓ2 under threat 'all'")
        if isinstance(attacks, str) or not isinstance(attacks, (list, tuple)) or not attacks:
            raise SuiteError(f"autoattack: attacks must be a non-empty list drawn from {list(TWO_CLASS_ATTACKS)}; "
                             f"got {attacks!r}")
        for name in attacks:
            if name in REFUSED:
                raise SuiteError(f"autoattack: {name!r} cannot run on the two-class 2AFC decision: {REFUSED[name]}")
            if name not in TWO_CLASS_ATTACKS:
                raise SuiteError(f"autoattack: unknown sub-attack {name!r}; expected some of {list(TWO_CLASS_ATTACKS)}")
        if len(set(attacks)) != len(attacks):
            raise SuiteError(f"autoattack: attacks lists a sub-attack twice: {list(attacks)}")
        self.attacks = list(attacks)
        self.n_iter = validate.integer(n_iter, "autoattack: n_iter", 1)
        self.restarts = validate.integer(restarts, "autoattack: restarts", 1)
        self.n_queries = validate.integer(n_queries, "autoattack: n_queries", 1)

    @property
    def needs_gradient(self) -> bool:  # type: ignore[override]
        """APGD back-propagates; Square only queries the metric."""
        return "apgd-ce" in self.attacks

    @property
    def radius(self) -> float:
        """ε' of the design notes: ε plus the slack of pyautoattack's float32 arithmetic."""
        return self.eps * (1 + _REL_SLACK) + _ABS_SLACK

    def perturb(self, metric, batch: Triplets) -> Triplets:
        self.check_metric(metric)
        objective = TwoAFCObjective(metric, batch, self.threat)
        clean = objective.clean()
        with torch.no_grad():
            best = MostDamaging(clean, *objective.distances(clean), batch.judge)
        active = (batch.judge != 0.5).nonzero().flatten()
        if self.eps == 0 or active.numel() == 0:
            return objective.triplets(best.images)
        label = (batch.judge > 0.5).long()
        adv = [c.clone() for c in clean]
        if self.threat == "ref":
            for group in separated_groups(batch.ref[active], self.norm, self.radius):
                members = active[group]
                model = ReferenceView(objective, members, self.norm, self.radius)
                adv[0][members] = self._run(model, batch.ref[members], label[members])
        else:
            stacked = torch.cat(clean, dim=1)[active]
            out = self._run(StackedView(objective, stacked.dtype), stacked, label[active])
            for image, part in zip(adv, out.split(3, dim=1)):
                image[active] = part
        adv = [project(a, c, self.eps, self.norm) for a, c in zip(adv, clean)]
        with torch.no_grad():
            best.update(adv, *objective.distances(adv))
        return objective.triplets(best.images)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """pyautoattack's ``run_standard_evaluation`` on one group, contiguous float32 inputs."""
        from pyautoattack import AutoAttack as PyAutoAttack
        from pyautoattack.autopgd_base import APGDAttack

        device, dtype = x.device, x.dtype
        aa = PyAutoAttack(model, attacks=list(self.attacks), device=device, eps=self.eps,
                          norm=AA_NORM[self.norm], seed=self.seed, version="custom")
        aa.verbose = False
        # rebuilt rather than edited: APGD derives its step-size checkpoints from n_iter in __init__
        aa.apgd = APGDAttack(model, n_iter=self.n_iter, norm=AA_NORM[self.norm], n_restarts=self.restarts,
                             eps=self.eps, seed=self.seed, loss="ce", eot_iter=1, rho=0.75, verbose=False,
                             device=device, logger=aa.logger)
        aa.square.n_queries = self.n_queries
        with quiet_and_isolated(device):
            x_adv, _ = aa.run_standard_evaluation(x.detach().float().contiguous(), y.contiguous(),
                                                  batch_size=x.shape[0])
        return x_adv.to(dtype)


__all__ = ["AA_NORM", "AutoAttack", "ReferenceView", "StackedView", "separated_groups", "TWO_CLASS_ATTACKS", "REFUSED",
           "quiet_and_isolated"]
