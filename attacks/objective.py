"""The 2AFC objective every attack maximises, and the per-sample record of the most damaging point.

With ``d_i = d(ref, x_i)`` and ``j`` the fraction of people who judged ``x1`` closer, the
adversary maximises :func:`suite.scoring.adversarial_margin` ``y·(d1 − d0)``,
``y = sign(j − ½)``: positive exactly when the metric prefers the option fewer people
chose; identically 0 when ``j = ½`` (nothing to gain).

Threat ``ref`` perturbs the reference only: the candidates are reduced once per batch
with the metric's ``represent`` (their embeddings, for an embedding metric), so a step
costs one forward and one backward pass of the reference:
``d_i = metric.distances_to(ref', r0, r1)``. Threat ``all`` perturbs all three images
and calls ``metric.pair_distances``. A similarity (``lower_is_better = False``) is
turned into a distance here (:func:`suite.scoring.oriented`), once for every attack.
"""

from __future__ import annotations

import torch

from suite.errors import SuiteError
from suite.scoring import adversarial_margin, oriented, twoafc_score, worst_score
from suite.types import THREATS, Triplets


class TwoAFCObjective:
    """Distances and margin of a batch of triplets as a function of the perturbed images.

    ``images`` is ``(ref,)`` under threat ``ref`` and ``(ref, x0, x1)`` under ``all``;
    ``index`` (a ``LongTensor``, optional) says which triplets of the batch the rows of
    ``images`` belong to, so a caller may evaluate any subset in any order. Each image
    is embedded in its own call; distances come from the metric's contract
    (``pair_distances``, ``distances_to``), the same methods the evaluator uses.
    """

    def __init__(self, metric, batch: Triplets, threat: str):
        if threat not in THREATS:
            raise SuiteError(f"threat must be one of {', '.join(THREATS)}; got {threat!r}")
        self.metric, self.batch, self.threat = metric, batch, threat
        if threat == "ref":
            with torch.no_grad():
                self.r0, self.r1 = metric.represent(batch.x0), metric.represent(batch.x1)

    def clean(self) -> tuple[torch.Tensor, ...]:
        """The images the adversary moves, unperturbed."""
        b = self.batch
        return (b.ref,) if self.threat == "ref" else (b.ref, b.x0, b.x1)

    def distances(self, images, index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d0, d1)`` as distances (lower = closer), each ``(n,)``, differentiable in ``images``."""
        m = self.metric
        if self.threat == "all":
            d0, d1 = m.pair_distances(*images)
        else:
            r0, r1 = (self.r0, self.r1) if index is None else (self.r0[index], self.r1[index])
            d0, d1 = m.distances_to(images[0], r0, r1)
        return oriented(d0, d1, m.lower_is_better)

    def judge(self, index: torch.Tensor | None = None) -> torch.Tensor:
        return self.batch.judge if index is None else self.batch.judge[index]

    def margin(self, d0, d1, index: torch.Tensor | None = None) -> torch.Tensor:
        return adversarial_margin(d0, d1, self.judge(index).to(d0.dtype))

    def triplets(self, images) -> Triplets:
        """The batch with the clean images replaced by ``images`` (candidates kept under ``ref``)."""
        b = self.batch
        if self.threat == "ref":
            return b.with_images(images[0], b.x0, b.x1)
        return b.with_images(*images)


class MostDamaging:
    """Per sample, the visited point with the lowest 2AFC score, then the highest margin.

    Start it from the clean images so the returned score never exceeds the natural one.
    A candidate replaces the incumbent only if it is strictly better, so samples with
    ``j = ½`` (score ½ and margin 0 everywhere) keep their clean images.
    """

    def __init__(self, images, d0: torch.Tensor, d1: torch.Tensor, judge: torch.Tensor):
        self.judge = judge
        self.images = [t.detach().clone() for t in images]
        self.score = twoafc_score(d0.detach(), d1.detach(), judge)
        self.margin = adversarial_margin(d0.detach().double(), d1.detach().double(), judge)

    def update(self, images, d0: torch.Tensor, d1: torch.Tensor, index: torch.Tensor | None = None) -> None:
        """Offer the points ``images``; ``index`` (optional) names the batch rows they belong to."""
        judge = self.judge if index is None else self.judge[index]
        score = twoafc_score(d0.detach(), d1.detach(), judge)
        margin = adversarial_margin(d0.detach().double(), d1.detach().double(), judge)
        old_score, old_margin = (self.score, self.margin) if index is None else (self.score[index], self.margin[index])
        better = (score < old_score) | ((score == old_score) & (margin > old_margin))
        if not bool(better.any()):
            return
        rows = better.nonzero().flatten() if index is None else index[better]
        for best, new in zip(self.images, images):
            best[rows] = new.detach()[better].to(best.dtype)
        self.score[rows] = score[better]
        self.margin[rows] = margin[better]

    def settled(self) -> torch.Tensor:
        """``(B,)`` bool: the score is already the lowest any point can have, ``min(j, 1 − j)``.

        For ``j ≠ ½`` that is a strict flip (``d0 ≠ d1``, decided for the option fewer
        people chose; a tie scores ½, above the minimum); for ``j = ½`` every point scores
        ½, so those samples are settled from the start (nothing to gain). No further
        point can replace a settled sample's score, only its margin.
        """
        return self.score <= worst_score(self.judge)


__all__ = ["THREATS", "TwoAFCObjective", "MostDamaging"]
