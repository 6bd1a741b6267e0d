"""DISTS: structure and texture similarity of deep features (Ding, Ma, Wang, Simoncelli,
"Image Quality Assessment: Unifying Structure and Texture Similarity", IEEE TPAMI 2020,
arXiv:2004.07728), as the ``DISTS_pytorch`` package computes it.

With ``x̃_j^(i)`` the j-th channel of stage i of a VGG16 whose max-poolings are
replaced by ℓ2-poolings (stage 0 is the image itself), and per channel the spatial
means ``μ``, variances ``σ²`` and covariance ``σ_xy``:

    D(x, y) = 1 − Σ_{i,j} ( α_ij · (2 μx μy + c1) / (μx² + μy² + c1)
                          + β_ij · (2 σxy + c2) / (σx² + σy² + c2) )

with ``c1 = c2 = 1e-6`` and the learned ``α, β ≥ 0`` divided by ``Σ(α + β)``. The
network sees ``(x − mean) / std`` with ImageNet's mean and std; stage 0 is the raw
``[0, 1]`` image. The ℓ2-pooling is ``sqrt(g ⋆ x² + 1e-12)`` with ``g`` the normalised
outer product of the Hann window ``(½, 1, ½)``, stride 2, padding 1, per channel.

Weights (tag ``dists-vgg16``): torchvision's ImageNet VGG16 file and the α/β file
``weights.pt`` that ships inside ``DISTS_pytorch``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from metrics.lpips import (VGG16_FILE, FeatureMetric, init_random_, load_strict, locate_file, read_state_dict,
                           torchvision_features, torchvision_state)
from metrics.weights import WeightFile, WeightsTag, locate, register_tag
from suite import validate
from suite.errors import SuiteError
from suite.registry import register_metric

DISTS_PAPER = ("Ding, Ma, Wang, Simoncelli: Image Quality Assessment: Unifying Structure and Texture Similarity, "
               "IEEE TPAMI 2020 (arXiv:2004.07728)")
DISTS_TAG = "dists-vgg16"
ALPHA_BETA_FILE = WeightFile(
    "weights.pt", "https://github.com/dingkeyan93/DISTS/raw/master/DISTS_pytorch/weights.pt",
    "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218", package="DISTS_pytorch:weights.pt")

register_tag(WeightsTag(
    tag=DISTS_TAG, metric="dists", files=(VGG16_FILE, ALPHA_BETA_FILE), paper=DISTS_PAPER,
    description="DISTS: torchvision VGG16 (ImageNet) with ℓ2-pooling + α/β of the DISTS_pytorch package"))

#: VGG16 ``features`` indices of the max-poolings DISTS replaces, with their channels
POOLS = {4: 64, 9: 128, 16: 256, 23: 512}
#: end index (exclusive) in VGG16 ``features`` of each stage
CUTS = (4, 9, 16, 23, 30)
#: channels of stage 0 (the image) to 5
CHANNELS = (3, 64, 128, 256, 512, 512)


class L2Pooling(nn.Module):
    """``sqrt(g ⋆ x² + 1e-12)`` per channel, stride 2: ``g`` the normalised 3×3 Hann window."""

    def __init__(self, channels: int):
        super().__init__()
        a = torch.hann_window(5, periodic=False, dtype=torch.float64)[1:-1]  # (½, 1, ½)
        g = a[:, None] * a[None, :]
        g = (g / g.sum()).to(torch.float32)
        self.register_buffer("filter", g[None, None].repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x**2, self.filter, stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


@register_metric("dists")
class DISTS(FeatureMetric):
    """DISTS (Ding et al., TPAMI 2020): 1 − Σ(α·structure + β·texture) over VGG16 ℓ2-pooled stages.

    ``D(x, y) = 1 − Σ_{i,j} (α_ij S1_ij + β_ij S2_ij)`` (module docstring), equal to
    ``DISTS_pytorch.DISTS()(x, y)`` on images in ``[0, 1]``.

    Args:
        weights: torchvision's ImageNet ``vgg16-397923af.pth``, or a folder holding it
            (default: looked up by :mod:`metrics.weights`, tag ``dists-vgg16``). α/β
            always come from ``DISTS_pytorch``'s ``weights.pt`` (or
            ``$LIPSIM_SUITE_WEIGHTS/dists-vgg16/weights.pt``).
        pretrained: ``False`` draws a random VGG16 (He-normal, seed 0) and needs no
            VGG file; only when asked (``random_weights`` then says so).
    """

    c1: float = 1e-6
    c2: float = 1e-6

    def __init__(self, weights: str | Path | None = None, pretrained: bool = True):
        super().__init__()
        pretrained = validate.boolean(pretrained, "dists: pretrained")
        vgg = torchvision_features("vgg16", CUTS[-1])
        init_random_(vgg)
        for i, channels in POOLS.items():
            vgg[i] = L2Pooling(channels)
        self.vgg = vgg
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.register_buffer("alpha", torch.zeros(1, sum(CHANNELS), 1, 1))
        self.register_buffer("beta", torch.zeros(1, sum(CHANNELS), 1, 1))
        #: whether the VGG16 is random (``pretrained=False``)
        self.random_weights = not pretrained
        if pretrained:
            path = locate_file(DISTS_TAG, VGG16_FILE, weights)
            load_strict(self.vgg, torchvision_state(read_state_dict(path), path), path, "torchvision vgg16 features")
        self._load_alpha_beta(locate(DISTS_TAG, ALPHA_BETA_FILE.name))
        self.requires_grad_(False)
        self.eval()

    def _load_alpha_beta(self, path: Path) -> None:
        state = read_state_dict(path)
        if set(state) != {"alpha", "beta"}:
            raise SuiteError(f"weights file {path} must hold exactly 'alpha' and 'beta'; has {sorted(state)}")
        shape = (1, sum(CHANNELS), 1, 1)
        for key in ("alpha", "beta"):
            if tuple(state[key].shape) != shape:
                raise SuiteError(f"weights file {path}: {key} has shape {tuple(state[key].shape)}, expected {shape}")
            getattr(self, key).copy_(state[key])

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[x, relu1_2, relu2_2, relu3_3, relu4_3, relu5_3]`` of the ℓ2-pooled VGG16."""
        x = x.to(self.mean.dtype)
        h = (x - self.mean) / self.std
        out, start = [x], 0
        for cut in CUTS:
            for i in range(start, cut):
                h = self.vgg[i](h)
            out.append(h)
            start = cut
        return out

    def compare(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """``1 − Σ_k Σ_c (α S1 + β S2)`` with the normalised α, β (module docstring)."""
        w_sum = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / w_sum, CHANNELS, dim=1)
        betas = torch.split(self.beta / w_sum, CHANNELS, dim=1)
        dist1 = dist2 = 0
        for a, b, alpha, beta in zip(fx, fy, alphas, betas):
            a_mean, b_mean = a.mean((2, 3), keepdim=True), b.mean((2, 3), keepdim=True)
            s1 = (2 * a_mean * b_mean + self.c1) / (a_mean**2 + b_mean**2 + self.c1)
            dist1 = dist1 + (alpha * s1).sum(1, keepdim=True)
            a_var = ((a - a_mean) ** 2).mean((2, 3), keepdim=True)
            b_var = ((b - b_mean) ** 2).mean((2, 3), keepdim=True)
            cov = (a * b).mean((2, 3), keepdim=True) - a_mean * b_mean
            s2 = (2 * cov + self.c2) / (a_var + b_var + self.c2)
            dist2 = dist2 + (beta * s2).sum(1, keepdim=True)
        return 1 - (dist1 + dist2).flatten()


__all__ = ["DISTS", "L2Pooling"]
