"""Random 2AFC batches and small metrics shared by the attack tests."""

from __future__ import annotations

import torch

from metrics.base import EmbeddingMetric
from suite.scoring import twoafc_score
from suite.types import Triplets


def make_triplets(n: int = 8, size: int = 16, spread: float = 0.1, seed: int = 0, lo: float = 0.3,
                  hi: float = 0.7, judge: torch.Tensor | None = None) -> Triplets:
    """References uniform in ``[lo, hi]``, candidates = reference + Gaussian noise, judges uniform."""
    g = torch.Generator().manual_seed(seed)
    ref = lo + (hi - lo) * torch.rand(n, 3, size, size, generator=g)
    x0 = (ref + spread * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    x1 = (ref + spread * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    if judge is None:
        judge = torch.rand(n, generator=g)
    return Triplets(ref, x0, x1, judge, [f"s{i}" for i in range(n)])


def scores(metric, t: Triplets) -> torch.Tensor:
    with torch.no_grad():
        return twoafc_score(metric.distance(t.ref, t.x0), metric.distance(t.ref, t.x1), t.judge)


def budget_used(clean: torch.Tensor, adv: torch.Tensor, norm: str) -> torch.Tensor:
    delta = (adv - clean).flatten(1).double()
    return delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)


class ConvEmbedding(EmbeddingMetric):
    """A small random conv net with cosine distance: a stand-in for a learned embedding metric."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
            torch.nn.GELU(), torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
        )
        self.calls: list[int] = []  # rows embedded per call

    def embed(self, x):
        self.calls.append(x.shape[0])
        return self.net(x)

    def compare(self, ex, ey):
        return 1 - torch.nn.functional.cosine_similarity(ex, ey, dim=1)
