"""The resize in front of the LipSim network, and its ℓ2 operator norm.

A metric whose network wants ``S×S`` images resizes other sizes inside
``distance``; the resize is part of the certified function, so the Lipschitz
constant of the whole metric is ``‖R‖₂`` (the network is 1-Lipschitz).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, C, H, W)`` to ``size`` (``align_corners=False``, no antialiasing)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=False)


def interpolation_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """The ``(n_out, n_in)`` float64 matrix of 1-D linear interpolation that :func:`resize` applies per axis.

    Obtained by resizing the basis vectors with the same kernel (a height-1 image keeps
    its single row exactly, so only the width axis interpolates).
    """
    basis = torch.eye(n_in, dtype=torch.float64).view(n_in, 1, 1, n_in)
    return resize(basis, (1, n_out)).view(n_in, n_out).T.contiguous()


@lru_cache(maxsize=64)
def resize_operator_norm(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> float:
    """Largest singular value of :func:`resize` from ``in_hw`` to ``out_hw`` (per channel).

    Bilinear interpolation is separable: on one channel it is ``R = A_h ⊗ A_w`` with
    ``A`` the 1-D interpolation matrices, and the singular values of a Kronecker
    product are the products of the factors' singular values, so
    ``‖R‖₂ = ‖A_h‖₂ · ‖A_w‖₂``. Channels and batch are resized independently (block
    diagonal), which leaves the norm unchanged. Each factor's norm is computed by an
    exact float64 SVD rather than power iteration: power iteration approaches the
    norm from below, and an underestimate would over-claim certified radii. The
    result is rounded up by a relative 1e-9 to cover the SVD's own rounding.
    """
    (h_in, w_in), (h_out, w_out) = in_hw, out_hw
    if (h_in, w_in) == (h_out, w_out):
        return 1.0
    norm = 1.0
    for n_in, n_out in ((h_in, h_out), (w_in, w_out)):
        if n_in != n_out:
            norm *= float(torch.linalg.matrix_norm(interpolation_matrix(n_in, n_out), ord=2))
    return norm * (1 + 1e-9)


__all__ = ["resize", "interpolation_matrix", "resize_operator_norm"]
