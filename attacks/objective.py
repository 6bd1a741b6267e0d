"""The 2AFC objective every attack maximises, and the per-sample record of the most damaging point.

With ``d_i = d(ref, x_i)`` and ``j`` the fraction of people who judged ``x1`` closer, the
adversary maximises :func:`suite.scoring.adversarial_margin` ``y·(d1 − d0)``,
``y = sign(j − ½)``: positive exactly when the metric prefers the option fewer people
chose; identically 0 when ``j = ½`` (nothing to gain).

Threat ``ref`` perturbs the reference only. For a metric with ``embed`` the clean
candidate embeddings ``e0, e1`` are computed once per batch, so a step costs one
forward and one backward pass of the reference: ``d_i = compare(embed(ref'), e_i)``.
Threat ``all`` perturbs all three images and recomputes everything.
"""

from __future__ import annotations

import torch

from suite.errors import SuiteError
from suite.evaluate import pair_distances
from suite.scoring import adversarial_margin, twoafc_score
from suite.types import THREATS, Triplets


class TwoAFCObjective:
    """Distances and margin of a batch of triplets as a function of the perturbed images.

    ``images`` is ``(ref,)`` under threat ``ref`` and ``(ref, x0, x1)`` under ``all``;
    ``index`` (a ``LongTensor``, optional) says which triplets of the batch the rows of
    ``images`` belong to, so a caller may evaluate any subset in any order. Each image
    is embedded in its own call; past the cached candidates, distances come from
    :func:`suite.evaluate.pair_distances`, so the attack and the evaluator compute a
    sample's distances the same way.
    """

    def __init__(self, metric, batch: Triplets, threat: str):
        if threat not in THREATS:
            raise SuiteError(f"threat must be one of {', '.join(THREATS)}; got {threat!r}")
        self.metric, self.batch, self.threat = metric, batch, threat
        self.use_embed = bool(metric.has_embed)
        if threat == "ref" and self.use_embed:
            with torch.no_grad():
                self.e0, self.e1 = metric.embed(batch.x0), metric.embed(batch.x1)

    def clean(self) -> tuple[torch.Tensor, ...]:
        """The images the adversary moves, unperturbed."""
        b = self.batch
        return (b.ref,) if self.threat == "ref" else (b.ref, b.x0, b.x1)

    def distances(self, images, index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d0, d1)``, each ``(n,)``, differentiable in ``images``."""
        m, b = self.metric, self.batch
        if self.threat == "all":
            return pair_distances(m, *images)
        (ref,) = images
        if self.use_embed:
            e0, e1 = (self.e0, self.e1) if index is None else (self.e0[index], self.e1[index])
            e = m.embed(ref)
            return m.compare(e, e0), m.compare(e, e1)
        x0, x1 = (b.x0, b.x1) if index is None else (b.x0[index], b.x1[index])
        return pair_distances(m, ref, x0, x1)

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

    def update(self, images, d0: torch.Tensor, d1: torch.Tensor) -> None:
        score = twoafc_score(d0.detach(), d1.detach(), self.judge)
        margin = adversarial_margin(d0.detach().double(), d1.detach().double(), self.judge)
        better = (score < self.score) | ((score == self.score) & (margin > self.margin))
        if not bool(better.any()):
            return
        for best, new in zip(self.images, images):
            best[better] = new.detach()[better].to(best.dtype)
        self.score = torch.where(better, score, self.score)
        self.margin = torch.where(better, margin, self.margin)


__all__ = ["THREATS", "TwoAFCObjective", "MostDamaging"]
