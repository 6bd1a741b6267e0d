"""The ``lipsim`` metric: 1 − cos between embeddings of a 1-Lipschitz SLL network, with certificates."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from metrics.base import EmbeddingMetric
from metrics.lipsim import checkpoint
from metrics.lipsim.model import LipSimNet
from metrics.lipsim.presets import preset as get_preset
from metrics.lipsim.resize import resize, resize_operator_norm
from suite import certify
from suite.errors import SuiteError
from suite.registry import register_metric
from suite.types import Gallery


@register_metric("lipsim")
class LipSimMetric(EmbeddingMetric):
    """LipSim (Ghazanfari et al. 2023): cosine distance of a 1-Lipschitz SLL embedding; certifiable.

    ``distance(x, y) = 1 − cos∠(f(x), f(y))`` with ``f`` the network's embedding
    (:meth:`LipSimNet.embed`). Images of another size than the network's
    ``input_size`` are resized first (bilinear, no antialiasing); the resize is part of
    the certified function, so the Lipschitz constant is its ℓ2 operator norm
    (:func:`~metrics.lipsim.resize.resize_operator_norm`), 1 without a resize.

    Args:
        weights: our checkpoint directory or ``model.safetensors``, or a reference
            LipSim ``.pth``; ``None`` = random weights drawn with ``seed``.
        preset: architecture for random weights or for a reference ``.pth``
            (default ``"tiny"`` for random weights; a ``.pth`` without it is read from
            its shapes). Our checkpoints carry their own config.
        seed: seed of the random weights.
        requires_bias: append the constant coordinate ``bias_value`` to the embedding;
            ``None`` keeps the checkpoint's setting.

    Example:
        >>> m = metrics.load("lipsim", preset="tiny")
        >>> m.distance(x, y), m.certified_radius(ref, x0, x1, threat="ref")
    """

    certifiable = True
    certified_threats = ("ref", "all")
    #: relative allowance for float32 error in the computed embeddings (``eta`` of suite.certify)
    float_slack: float = 1e-5

    def __init__(
        self,
        weights: str | Path | None = None,
        preset: str | None = None,
        seed: int = 0,
        requires_bias: bool | None = None,
        *,
        net: LipSimNet | None = None,
    ):
        super().__init__()
        if net is None:
            net = self._build(weights, preset, seed)
            net.requires_grad_(False)  # a metric's weights are fixed: enables the cached fast path
        if requires_bias is not None and bool(requires_bias) != net.config.requires_bias:
            net.config = net.config.replace(requires_bias=bool(requires_bias))
        self.net = net
        self.weights = None if weights is None else str(weights)

    @staticmethod
    def _build(weights, preset: str | None, seed: int) -> LipSimNet:
        if weights is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                return LipSimNet(get_preset(preset or "tiny"))
        config = get_preset(preset) if preset is not None else None
        return checkpoint.load(weights, config=config)

    @classmethod
    def from_net(cls, net: LipSimNet) -> "LipSimMetric":
        """The metric around an existing network (shared, not copied, not frozen).

        Freeze it (``net.requires_grad_(False)``) for the fast evaluation path.
        """
        metric = cls(net=net)
        metric.name = "lipsim"
        return metric

    def weights_id(self) -> str:
        """Hash of the weights and the config (``requires_bias`` changes the function, not the weights)."""
        h = hashlib.sha256(super().weights_id().encode())
        h.update(json.dumps(self.net.config.to_dict(), sort_keys=True).encode())
        return h.hexdigest()[:16]

    @property
    def input_size(self) -> int:  # type: ignore[override]
        return self.net.config.input_size

    def lipschitz(self, image_hw: tuple[int, int]) -> float:
        """Lipschitz constant of ``embed`` on images of size ``image_hw``: the resize's ℓ2 norm."""
        s = self.input_size
        return resize_operator_norm(tuple(int(v) for v in image_hw), (s, s))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        return x if tuple(x.shape[-2:]) == (s, s) else resize(x, (s, s))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Raw embedding ``f(x)`` (not normalised), after resizing to ``input_size`` if needed."""
        self.check_images(x)
        return self.net.embed(self._prepare(x))

    def compare(self, ex: torch.Tensor, ey: torch.Tensor) -> torch.Tensor:
        """``1 − cos∠(ex, ey)``, computed in float64 (small distances keep their digits)."""
        cos = F.cosine_similarity(ex.to(torch.float64), ey.to(torch.float64), dim=1, eps=1e-30)
        return (1 - cos).to(ex.dtype)

    def _eta(self, *embeddings: torch.Tensor) -> torch.Tensor:
        norms = torch.stack([e.detach().to(torch.float64).norm(dim=1) for e in embeddings]).amax(0)
        return self.float_slack * (1 + norms)

    @torch.no_grad()
    def certified_radius(self, ref, x0, x1, threat: str = "ref") -> torch.Tensor:
        """Per-sample ℓ2 radius (in the given images' pixel space) of the 2AFC decision.

        ``ref``: :func:`suite.certify.ref_radius` (exact); ``all``:
        :func:`suite.certify.all_radius`. Both divide by the resize's norm and allow for
        float32 error (``float_slack``).
        """
        if threat not in self.certified_threats:
            raise SuiteError(f"lipsim certifies threats {self.certified_threats}; got {threat!r}")
        self.check_images(ref, x0, x1)
        e_ref, e0, e1 = self.embed(ref), self.embed(x0), self.embed(x1)
        lip = max(self.lipschitz(t.shape[-2:]) for t in (ref, x0, x1))
        eta = self._eta(e_ref, e0, e1)
        if threat == "ref":
            return certify.ref_radius(e_ref, e0, e1, lipschitz=lip, eta=eta)
        return certify.all_radius(e_ref, e0, e1, lipschitz=lip, eta=eta)

    @torch.no_grad()
    def certified_match_radius(self, images: torch.Tensor, gallery: Gallery, matches) -> torch.Tensor:
        """Per-query ℓ2 radius (in the queries' pixel space) of a correct rank-1 copy-detection match.

        :func:`suite.certify.match_radius` of the queries' embeddings against
        ``gallery.reps`` (raw LipSim embeddings of the gallery: ``represent`` is
        ``embed``), only the queries moving; divided by the resize's norm at the queries'
        size, lowered by ``2η/L`` for float32 error in the query embeddings
        (``float_slack``). ``matches``: per query, the gallery indices of its true
        originals. ``(B,)`` float64: 0 where the rank-1 item is not a true original,
        ``inf`` where every gallery item is one.
        """
        self.check_images(images)
        e = self.embed(images)
        return certify.match_radius(e, gallery.reps, matches, lipschitz=self.lipschitz(images.shape[-2:]),
                                    eta=self._eta(e))

    @torch.no_grad()
    def distance_bound(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """Upper bound on ``distance(x, x + δ)`` for ``‖δ‖₂ ≤ eps`` (:func:`suite.certify.distance_bound`)."""
        self.check_images(x)
        e = self.embed(x)
        return certify.distance_bound(e, eps, lipschitz=self.lipschitz(x.shape[-2:]), eta=self._eta(e))


__all__ = ["LipSimMetric"]
