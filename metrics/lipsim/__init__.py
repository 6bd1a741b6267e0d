"""LipSim: a 1-Lipschitz student of DreamSim with provable 2AFC certificates.

Modules: :mod:`~metrics.lipsim.layers` (SLL layers), :mod:`~metrics.lipsim.presets`
(architecture data), :mod:`~metrics.lipsim.model` (the network),
:mod:`~metrics.lipsim.checkpoint` (our safetensors format and the reference
``.pth`` import), :mod:`~metrics.lipsim.resize` (the resize in front of the
network and its operator norm), :mod:`~metrics.lipsim.metric` (the ``lipsim`` metric).
"""

from metrics.lipsim import metric  # noqa: E402,F401  (registers "lipsim")
