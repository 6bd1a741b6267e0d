"""Core value types shared by datasets, metrics, attacks and evaluators."""

from __future__ import annotations

from dataclasses import dataclass, replace

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
