"""Classic full-reference metrics as differentiable distances: ``l2``, ``psnr``, ``ssim``."""

from __future__ import annotations


import torch
import torch.nn.functional as F

from metrics.base import EmbeddingMetric, Metric
from suite.errors import SuiteError
from suite.registry import register_metric


def bisector_radius(ref: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """ℓ2 distance from ``ref`` to the hyperplane bisecting ``x0`` and ``x1``.

    With ``d_i = ‖ref − x_i‖``, the decision ``d0 < d1`` flips exactly when ``ref``
    crosses ``{z : ‖z − x0‖ = ‖z − x1‖} = {z : ⟨z, x1 − x0⟩ = (‖x1‖² − ‖x0‖²)/2}``,
    whose distance from ``ref`` is ``|d1² − d0²| / (2‖x1 − x0‖)``. This is exact in
    ℝⁿ; the ``[0, 1]`` box can only make the adversary's job harder, so it is a sound
    radius. Identical candidates (``x0 = x1``) give radius 0 (the decision is a tie).
    """
    r, a, b = (t.flatten(1).double() for t in (ref, x0, x1))
    d0sq = (r - a).pow(2).sum(1)
    d1sq = (r - b).pow(2).sum(1)
    gap = (b - a).norm(dim=1)
    radius = (d1sq - d0sq).abs() / (2 * gap.clamp_min(1e-300))
    return torch.where(gap > 0, radius, torch.zeros_like(radius)).to(ref.dtype)


class _PixelMetric(EmbeddingMetric):
    """Metrics that are a monotone function of the pixel-space ℓ2 distance."""

    certifiable = True
    certified_threats = ("ref",)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        self.check_images(x)
        return x.flatten(1)

    def certified_radius(self, ref, x0, x1, threat: str = "ref") -> torch.Tensor:
        """Exact ℓ2 radius of the decision under threat ``ref`` (see :func:`bisector_radius`)."""
        if threat != "ref":
            return super().certified_radius(ref, x0, x1, threat)
        return bisector_radius(ref, x0, x1)

    @torch.no_grad()
    def certified_match_radius(self, images: torch.Tensor, gallery, matches) -> torch.Tensor:
        """Exact ℓ2 radius of each query's correct top-1 match when only the query moves.

        The metric is an increasing function of ``‖q − g‖₂``, so the top-1 match is the
        nearest gallery item in pixel space. Let ``g*`` be the query's nearest true original
        (``d* = ‖q − g*‖``). ``g*`` stays strictly closer than a non-match ``g_k`` while ``q``
        stays on its side of their bisecting hyperplane, whose distance from ``q`` is
        ``(d_k² − d*²) / (2‖g_k − g*‖)`` (:func:`bisector_radius`); the match survives every
        ``‖δ‖₂ < R`` with ``R`` the minimum over non-matches. ``R`` is exact in ℝⁿ when the
        query has one original (the ``[0, 1]`` box only hinders the adversary); with several
        originals, certifying the nearest alone is sufficient and may be conservative.
        0 when the top-1 is not a true original or the query has none; ``inf`` when every
        gallery item is a true original.
        """
        q = images.flatten(1).double()
        g = gallery.reps.flatten(1).double().to(q.device)
        d2 = torch.cdist(q, g).pow(2)
        out = torch.zeros(q.shape[0], dtype=torch.float64, device=q.device)
        for b, match in enumerate(matches):
            if not match:
                continue
            positives = torch.tensor(sorted(set(int(k) for k in match)), device=q.device)
            others = torch.ones(g.shape[0], dtype=torch.bool, device=q.device)
            others[positives] = False
            if not bool(others.any()):
                out[b] = float("inf")
                continue
            star = positives[d2[b, positives].argmin()]
            if not bool(d2[b, star] < d2[b, others].min()):
                continue  # the top-1 is not a true original: nothing to certify
            gap = (g[others] - g[star]).norm(dim=1)
            out[b] = ((d2[b, others] - d2[b, star]) / (2 * gap)).min()
        return out  # float64: a float32 rounding could overstate the radius


@register_metric("l2", aliases=("euclidean",))
class L2(_PixelMetric):
    """Euclidean distance between images, ‖x − y‖₂ over all pixels."""

    def compare(self, ex: torch.Tensor, ey: torch.Tensor) -> torch.Tensor:
        # sqrt has an infinite gradient at 0; the tiny floor keeps attacks from the clean point finite
        return ((ex - ey).pow(2).sum(1) + 1e-20).sqrt()

    def distance_bound(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """``‖x − (x + δ)‖₂ = ‖δ‖₂ ≤ eps``."""
        return torch.full((x.shape[0],), float(eps), dtype=x.dtype, device=x.device)


@register_metric("psnr")
class PSNR(_PixelMetric):
    """Negative PSNR as a distance: 10·log10(MSE) (lower is closer), data range 1."""

    def compare(self, ex: torch.Tensor, ey: torch.Tensor) -> torch.Tensor:
        mse = (ex - ey).pow(2).mean(1)
        return 10 * torch.log10(mse + 1e-10)

    def distance_bound(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """``10·log10(‖δ‖²/n + 1e-10) ≤ 10·log10(ε²/n + 1e-10)`` for ``‖δ‖₂ ≤ ε`` (log10 is increasing)."""
        n = x[0].numel()
        value = 10 * torch.log10(torch.tensor(eps**2 / n + 1e-10, dtype=torch.float64))
        return torch.full((x.shape[0],), float(value), dtype=x.dtype, device=x.device)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian ``g_i ∝ exp(−(i − c)² / 2σ²)``, ``c = (size − 1)/2``."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM per image (Wang et al. 2004), per channel then averaged.

    ``SSIM = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))`` with
    ``C1 = (0.01 L)²``, ``C2 = (0.03 L)²``, Gaussian-weighted local statistics
    (σ = 1.5, 11 taps) and population covariances, averaged over the valid
    region: the conventions of ``skimage.metrics.structural_similarity`` with
    ``gaussian_weights=True, use_sample_covariance=False``.
    """
    channels = x.shape[1]
    g = gaussian_window(window, sigma).to(dtype=x.dtype, device=x.device)
    kx = g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    ky = g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kx, groups=channels), ky, groups=channels)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


@register_metric("ssim")
class SSIM(Metric):
    """1 − SSIM (Gaussian window 11, σ 1.5), averaged over RGB channels."""

    def __init__(self, window: int = 11, sigma: float = 1.5):
        super().__init__()
        self.window, self.sigma = window, sigma

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.check_images(x, y)
        if min(x.shape[-2:]) < self.window:
            raise SuiteError(f"ssim needs images of at least {self.window}×{self.window}; got {tuple(x.shape[-2:])}")
        return 1 - ssim(x, y, self.window, self.sigma)


__all__ = ["L2", "PSNR", "SSIM", "ssim", "bisector_radius", "gaussian_window"]
