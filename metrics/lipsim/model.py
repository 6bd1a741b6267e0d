"""The LipSim network: a 1-Lipschitz (ℓ2) map from images to embeddings.

``LipSimNet(config)(x)`` takes images ``(B, 3, S, S)`` in ``[0, 1]`` with
``S = config.input_size`` and returns the raw embedding ``(B, embed_dim)``:

    zero-pad channels → conv SLL × conv_depth → (4×4 sum-pool / 4) × n_pools
    → flatten (C, H, W order) → dense SLL × dense_depth → first embed_dim coordinates

Every stage is 1-Lipschitz (SLL layers by Araujo et al.'s theorem, padding and
truncation are a partial isometry and a projection, the pooling has norm 1; see
:mod:`metrics.lipsim.layers`), so the composition is 1-Lipschitz. No input
normalisation: the reference normalises with mean 0 and std 1.
"""

from __future__ import annotations

import torch
from torch import nn

from metrics.lipsim.layers import PadChannels, SLLConv2d, SLLLinear, SumPool4
from metrics.lipsim.presets import LipSimConfig
from suite.errors import SuiteError


class LipSimNet(nn.Module):
    """1-Lipschitz embedding network of LipSim, built from a :class:`LipSimConfig`.

    Submodules (and state-dict keys): ``convs.<i>.{kernel,bias,q}``,
    ``dense.<j>.{weight,bias,q}``. ``forward`` is the raw embedding (used for
    distillation); ``embed`` adds the constant coordinate of ``config.requires_bias``.

    Example:
        >>> net = LipSimNet(preset("tiny"))
        >>> net(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 128])
    """

    def __init__(self, config: LipSimConfig):
        super().__init__()
        self.config = config
        c = config
        self.pad = PadChannels(c.in_channels, c.channels)
        self.convs = nn.ModuleList(
            SLLConv2d(c.channels, c.conv_inner, c.kernel_size, q_scaling=c.conv_q_scaling) for _ in range(c.conv_depth)
        )
        self.pools = nn.ModuleList(SumPool4() for _ in range(c.n_pools))
        self.dense = nn.ModuleList(SLLLinear(c.dense_width, c.dense_inner) for _ in range(c.dense_depth))

    @property
    def input_size(self) -> int:
        return self.config.input_size

    def check_input(self, x: torch.Tensor) -> None:
        c = self.config
        if x.ndim != 4 or x.shape[1] != c.in_channels or x.shape[-2:] != (c.input_size, c.input_size):
            raise SuiteError(
                f"LipSimNet ({c.name}) expects images (B, {c.in_channels}, {c.input_size}, {c.input_size}); "
                f"got {tuple(x.shape)} (resize first, e.g. through the lipsim metric)"
            )

    def features(self, x: torch.Tensor, fast: bool = False) -> torch.Tensor:
        """Padding, convolutional layers and poolings: ``(B, channels, s, s)``, channels-last.

        ``fast`` (no gradient needed anywhere) runs the layers' cached fast path in
        place on the padded copy, which this method owns.
        """
        if fast:
            h = torch.empty((x.shape[0], self.config.channels, *x.shape[2:]), dtype=x.dtype, device=x.device,
                            memory_format=torch.channels_last)
            h[:, : x.shape[1]] = x
            h[:, x.shape[1]:] = 0
            for conv in self.convs:
                h = conv.forward_fast(h, inplace=True)
        else:
            h = self.pad(x).contiguous(memory_format=torch.channels_last)
            for conv in self.convs:
                h = conv(h)
        for pool in self.pools:
            h = pool(h)
        return h

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Flatten (channel-major, as the reference), dense layers, truncation to ``embed_dim``."""
        x = x.reshape(x.shape[0], -1)
        for layer in self.dense:
            x = layer(x)
        return x[:, : self.config.embed_dim]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        param = next(self.parameters(), None)
        x = x.to(param.dtype) if param is not None else x
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        return self.head(self.features(x, fast=not needs_grad))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding a metric compares: ``forward(x)``, then ``bias_value`` appended if ``requires_bias``.

        Appending a constant keeps the map 1-Lipschitz and bounds its norm below by
        ``bias_value``, so the direction of the embedding is well defined everywhere.
        """
        e = self.forward(x)
        if not self.config.requires_bias:
            return e
        return torch.cat([e, e.new_full((e.shape[0], 1), float(self.config.bias_value))], dim=1)


__all__ = ["LipSimNet"]
