"""An example third-party metric: mean absolute pixel difference."""

from __future__ import annotations

import torch

from metrics.base import EmbeddingMetric


class L1Distance(EmbeddingMetric):
    """Mean absolute difference between images (an out-of-tree plugin example)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        self.check_images(x)
        return x.flatten(1)

    def compare(self, ex: torch.Tensor, ey: torch.Tensor) -> torch.Tensor:
        return self.scale * (ex - ey).abs().mean(1)
