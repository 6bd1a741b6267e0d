"""Core value types shared by datasets, metrics, attacks and evaluators."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import torch

#: perturbation norms every attack and certificate speaks of (ε measured on images in [0, 1])
NORMS = ("l2", "linf")
#: threat models: ``ref`` perturbs only the reference, ``all`` the reference and both candidates
THREATS = ("ref", "all")


@dataclass
class Triplets:
    """A batch of 2AFC triplets.

    ``ref``, ``x0``, ``x1``: float tensors ``(B, 3, H, W)`` in ``[0, 1]``, RGB.
    ``judge``: ``(B,)`` float, the fraction of people who judged ``x1`` closer to ``ref``.
    ``sample_id``: one stable string per triplet (used to join rows across cells).
    """

    ref: torch.Tensor
    x0: torch.Tensor
    x1: torch.Tensor
    judge: torch.Tensor
    sample_id: list[str]

    def __len__(self) -> int:
        return int(self.ref.shape[0])

    def to(self, device: torch.device | str) -> "Triplets":
        return replace(
            self,
            ref=self.ref.to(device),
            x0=self.x0.to(device),
            x1=self.x1.to(device),
            judge=self.judge.to(device),
        )

    def with_images(self, ref: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor) -> "Triplets":
        return replace(self, ref=ref, x0=x0, x1=x1)

    def subset(self, index: torch.Tensor) -> "Triplets":
        """The triplets at ``index`` (a ``LongTensor`` of batch rows), in that order."""
        rows = index.tolist()
        return Triplets(self.ref[index], self.x0[index], self.x1[index], self.judge[index],
                        [self.sample_id[i] for i in rows])


@runtime_checkable
class MetricContract(Protocol):
    """What the evaluator and the attacks rely on; :class:`metrics.base.Metric` implements it.

    Images are ``(B, 3, H, W)`` in ``input_range`` (always ``[0, 1]``); distances ``(B,)``.
    """

    name: str
    input_range: tuple[float, float]
    lower_is_better: bool
    differentiable: bool
    certifiable: bool
    certified_threats: tuple[str, ...]

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def represent(self, x: torch.Tensor) -> torch.Tensor: ...

    def distance_to(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor: ...

    def distances_to(self, ref: torch.Tensor, r0: torch.Tensor, r1: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def pair_distances(self, ref: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def certified_radius(self, ref: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor,
                         threat: str = "ref") -> torch.Tensor: ...

    def distance_bound(self, x: torch.Tensor, eps: float) -> torch.Tensor: ...

    def metric_id(self) -> str: ...


@runtime_checkable
class AttackContract(Protocol):
    """A 2AFC attack (:class:`attacks.base.Attack`): ``perturb`` moves the images its threat allows."""

    name: str
    norm: str
    eps: float
    threat: str

    def perturb(self, metric: MetricContract, batch: Triplets) -> Triplets: ...


@runtime_checkable
class DistanceAttackContract(Protocol):
    """A single-image attack (:class:`attacks.base.DistanceAttack`): ``maximise`` pushes
    ``d(x, x + δ)`` up within ε."""

    name: str
    norm: str
    eps: float

    def maximise(self, metric: MetricContract, x: torch.Tensor) -> torch.Tensor: ...


#: the task types a dataset can pose: 2AFC triplets, or retrieval (a gallery and queries)
TASKS = ("2afc", "retrieval")


@dataclass
class Queries:
    """A batch of retrieval queries against a fixed gallery.

    ``images``: ``(B, 3, H, W)`` float in ``[0, 1]``. ``matches``: per query, the gallery
    indices of its true originals (empty for a query that has none, e.g. a distractor
    query). ``sample_id``: one stable string per query.
    """

    images: torch.Tensor
    matches: list[tuple[int, ...]]
    sample_id: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str) -> "Queries":
        return replace(self, images=self.images.to(device))

    def with_images(self, images: torch.Tensor) -> "Queries":
        return replace(self, images=images)

    def subset(self, index: torch.Tensor) -> "Queries":
        """The queries at ``index`` (a ``LongTensor`` of batch rows), in that order."""
        rows = index.tolist()
        return Queries(self.images[index], [self.matches[i] for i in rows], [self.sample_id[i] for i in rows])


@dataclass
class Gallery:
    """A retrieval gallery reduced once by a metric: ``ids`` (one per item) and ``reps``
    (``metric.represent`` of the gallery images, ``(G, ...)``; the images themselves for a
    metric without an embedding)."""

    ids: list[str]
    reps: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)


@runtime_checkable
class RetrievalAttackContract(Protocol):
    """A retrieval attack (:mod:`attacks.retrieval`): ``perturb`` moves only the queries, within ε."""

    name: str
    norm: str
    eps: float
    goal: str  # "evasion" | "collision"

    def perturb(self, metric: MetricContract, queries: Queries, gallery: Gallery,
                targets: torch.Tensor | None = None) -> torch.Tensor: ...
