"""The metric contract (see DESIGN.md, "Contracts: Metric").

A metric is a ``torch.nn.Module`` with ``distance(x, y) -> (B,)``, differentiable,
lower meaning more similar, on images ``(B, 3, H, W)`` in ``[0, 1]``. Metrics that
are a function of per-image embeddings subclass :class:`EmbeddingMetric` and
implement ``embed`` and ``compare``; the evaluator and the attacks then compute the
clean candidate embeddings once. Certifiable metrics also implement
``certified_radius`` and ``distance_bound``.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from suite.errors import SuiteError


class Metric(nn.Module):
    """Base class of every metric."""

    #: registry name, set by :func:`metrics.load`
    name: str = ""
    #: side length the network wants (the metric resizes inside ``distance``); ``None`` = any size
    input_size: int | None = None
    lower_is_better: bool = True
    certifiable: bool = False
    #: which threat models ``certified_radius`` supports
    certified_threats: tuple[str, ...] = ()

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(x, y)

    @property
    def has_embed(self) -> bool:
        return False

    def weights_id(self) -> str:
        """A short hash of the parameters and buffers: part of every cell key."""
        h = hashlib.sha256(type(self).__qualname__.encode())
        for key, tensor in sorted(self.state_dict().items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def certified_radius(self, ref, x0, x1, threat: str = "ref") -> torch.Tensor:
        """Per-sample ℓ2 radius within which the 2AFC decision provably cannot change."""
        raise SuiteError(f"metric {self.name!r} has no certificate")

    def distance_bound(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """Per-sample upper bound on ``distance(x, x + δ)`` over ``‖δ‖₂ ≤ eps``."""
        raise SuiteError(f"metric {self.name!r} has no certified distance bound")

    def check_images(self, *images: torch.Tensor) -> None:
        for img in images:
            if img.ndim != 4 or img.shape[1] != 3:
                raise SuiteError(f"metric {self.name!r} expects images (B, 3, H, W); got shape {tuple(img.shape)}")


class EmbeddingMetric(Metric):
    """A distance between per-image embeddings: ``distance(x, y) = compare(embed(x), embed(y))``."""

    @property
    def has_embed(self) -> bool:
        return True

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compare(self, ex: torch.Tensor, ey: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.check_images(x, y)
        return self.compare(self.embed(x), self.embed(y))
