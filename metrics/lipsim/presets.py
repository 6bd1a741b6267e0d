"""LipSim architecture presets: data, kept apart from the network code.

The fields follow the LipSim reference (``L2LipschitzNetwork``): the image is
zero-padded from 3 to ``channels`` channels, goes through ``conv_depth``
convolutional SLL layers of inner width ``conv_inner``, then ``n_pools`` 4×4
sum-pooling/4 layers (all after the last convolution, as in the reference),
is flattened to ``channels · (input_size / 4^n_pools)²`` features, goes through
``dense_depth`` dense SLL layers of inner width ``dense_inner`` and is truncated
to its first ``embed_dim`` coordinates.

=========  =====  ========  ==========  ==========  =======  ===========  ===========  =========
preset     input  channels  conv_depth  conv_inner  n_pools  dense_depth  dense_inner  embed_dim
=========  =====  ========  ==========  ==========  =======  ===========  ===========  =========
tiny          64        16           4           8        1            2          256        128
small        224        45          20           5        2            7         1024       1792
medium       224        60          30           5        2           10         2048       1792
large        224        90          50           5        2           10         2048       1792
=========  =====  ========  ==========  ==========  =======  ===========  ===========  =========

``small`` is the released LipSim model (dense width 45·14·14 = 8820, embedding
1792 = DreamSim's ensemble); ``medium`` and ``large`` are the reference code's
other sizes (all three with the reference's convolutional ``T``, ``conv_q_scaling=False``);
``tiny`` trains on a CPU in minutes at 64×64 and uses the SLL paper's ``T``.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

from suite.errors import SuiteError, UnknownNameError


@dataclass(frozen=True)
class LipSimConfig:
    """Every field that determines a LipSim network's function (stored as ``config.json``).

    ``requires_bias`` appends the constant coordinate ``bias_value`` to the embedding
    (see :meth:`metrics.lipsim.model.LipSimNet.embed`); ``conv_q_scaling`` uses the
    SLL paper's rescaling ``q_j / q_i`` in the convolutional ``T``. The reference code
    multiplies by ``q_i / q_i`` instead (its ``q`` cancels), so ``False`` reproduces
    released checkpoints.
    """

    name: str = "custom"
    input_size: int = 224
    in_channels: int = 3
    channels: int = 45
    conv_depth: int = 20
    conv_inner: int = 5
    kernel_size: int = 3
    n_pools: int = 2
    dense_depth: int = 7
    dense_inner: int = 1024
    embed_dim: int = 1792
    requires_bias: bool = False
    bias_value: float = 2.0
    conv_q_scaling: bool = False

    def __post_init__(self):
        for field in ("input_size", "in_channels", "channels", "conv_inner", "kernel_size", "dense_inner", "embed_dim"):
            if int(getattr(self, field)) < 1:
                raise SuiteError(f"LipSim config: {field} must be ≥ 1; got {getattr(self, field)}")
        for field in ("conv_depth", "n_pools", "dense_depth"):
            if int(getattr(self, field)) < 0:
                raise SuiteError(f"LipSim config: {field} must be ≥ 0; got {getattr(self, field)}")
        if self.kernel_size % 2 != 1:
            raise SuiteError(f"LipSim config: kernel_size must be odd (same padding); got {self.kernel_size}")
        if self.channels < self.in_channels:
            raise SuiteError(
                f"LipSim config: channels ({self.channels}) must be ≥ in_channels ({self.in_channels}): "
                "the input is zero-padded, never cut"
            )
        if self.input_size % (4**self.n_pools):
            raise SuiteError(
                f"LipSim config: input_size {self.input_size} must be divisible by 4^n_pools = {4**self.n_pools}"
            )
        if self.embed_dim > self.dense_width:
            raise SuiteError(
                f"LipSim config: embed_dim {self.embed_dim} exceeds the dense width {self.dense_width} "
                f"(channels · (input_size / 4^n_pools)²)"
            )

    @property
    def feature_size(self) -> int:
        """Side length of the feature map after the poolings."""
        return self.input_size // (4**self.n_pools)

    @property
    def dense_width(self) -> int:
        """Width of the dense layers: the flattened feature map."""
        return self.channels * self.feature_size**2

    @property
    def out_dim(self) -> int:
        """Dimension of :meth:`LipSimNet.embed`: ``embed_dim`` plus the bias coordinate if any."""
        return self.embed_dim + int(self.requires_bias)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LipSimConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SuiteError(f"LipSim config: unknown fields {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)

    def replace(self, **overrides) -> "LipSimConfig":
        return LipSimConfig.from_dict({**self.to_dict(), **overrides})


PRESETS: dict[str, LipSimConfig] = {
    "tiny": LipSimConfig(
        name="tiny", input_size=64, channels=16, conv_depth=4, conv_inner=8, n_pools=1,
        dense_depth=2, dense_inner=256, embed_dim=128, conv_q_scaling=True,
    ),
    "small": LipSimConfig(
        name="small", input_size=224, channels=45, conv_depth=20, conv_inner=5, n_pools=2,
        dense_depth=7, dense_inner=1024, embed_dim=1792,
    ),
    "medium": LipSimConfig(
        name="medium", input_size=224, channels=60, conv_depth=30, conv_inner=5, n_pools=2,
        dense_depth=10, dense_inner=2048, embed_dim=1792,
    ),
    "large": LipSimConfig(
        name="large", input_size=224, channels=90, conv_depth=50, conv_inner=5, n_pools=2,
        dense_depth=10, dense_inner=2048, embed_dim=1792,
    ),
}


def preset(name: str, **overrides) -> LipSimConfig:
    """The preset ``name`` with ``overrides`` applied: ``preset("tiny", embed_dim=64)``."""
    key = str(name).lower()
    if key not in PRESETS:
        close = difflib.get_close_matches(key, list(PRESETS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownNameError(f"unknown LipSim preset {name!r}{hint} (presets: {', '.join(PRESETS)})")
    return PRESETS[key].replace(**overrides) if overrides else PRESETS[key]


__all__ = ["LipSimConfig", "PRESETS", "preset"]
