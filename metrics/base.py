"""The metric contract, in one place (DESIGN.md, "Contracts: Metric"; the protocol is
:class:`suite.types.MetricContract`).

A metric is a ``torch.nn.Module`` built by :func:`metrics.load` (the registry passes
the config's options to its constructor as keyword arguments). Rules:

- **Inputs**: images ``(B, 3, H, W)``, float, RGB, in ``[0, 1]`` (``input_range``); a
  metric whose network wants another range or size maps and resizes *inside*
  (``input_size`` says which size), and that mapping is part of the certified function.
- **Output**: ``distance(x, y) -> (B,)``; ``lower_is_better`` (the default) says lower
  means more similar; a similarity declares ``lower_is_better = False`` and the
  evaluator and attacks turn it around.
- **Gradient**: ``differentiable = True`` means every attack may back-propagate
  through ``distance``; a metric without a gradient declares ``False`` and only
  gradient-free attacks accept it.
- **Triplets**: every caller (evaluator, attacks, training validation) gets a
  triplet's two distances from :meth:`Metric.pair_distances`, or, when the candidates
  stay fixed while the reference moves, from :meth:`Metric.represent` (once) and
  :meth:`Metric.distances_to` (each step); one image against a fixed one goes through
  :meth:`Metric.distance_to`. An :class:`EmbeddingMetric` implements
  ``embed`` and ``compare`` and so embeds each image once.
- **Certificates** (optional): ``certifiable = True``, ``certified_threats``,
  ``certified_radius`` and ``distance_bound``.
- **Identity**: :meth:`Metric.metric_id` hashes the weights and every constructor
  option except those in ``identity_exclude`` (the weights *path*: the weights' hash
  already stands for it), so two settings of one class never share an id.
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

from suite.errors import SuiteError


class Metric(nn.Module):
    """Base class of every metric (see the module docstring for the contract)."""

    #: registry name, set by :func:`metrics.load`
    name: str = ""
    #: constructor options as bound by the registry (defaults applied), set by :func:`metrics.load`
    build_options: dict = {}
    #: options that do not change the function computed (left out of :meth:`metric_id`)
    identity_exclude: tuple[str, ...] = ("weights",)
    #: side length the network wants (the metric resizes inside ``distance``); ``None`` = any size
    input_size: int | None = None
    #: the range of pixel values ``distance`` accepts: always ``[0, 1]`` at the suite's boundary
    input_range: tuple[float, float] = (0.0, 1.0)
    lower_is_better: bool = True
    differentiable: bool = True
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

    def represent(self, x: torch.Tensor) -> torch.Tensor:
        """What a candidate image is reduced to once, for :meth:`distances_to` (here: the image itself)."""
        return x

    def distance_to(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``d(x, y)`` from the image ``x`` and ``r = represent(y)``."""
        return self.distance(x, r)

    def distances_to(self, ref: torch.Tensor, r0: torch.Tensor, r1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d(ref, x0), d(ref, x1))`` from the images ``ref`` and ``r_i = represent(x_i)``."""
        return self.distance_to(ref, r0), self.distance_to(ref, r1)

    def pair_distances(self, ref: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d(ref, x0), d(ref, x1))``, each ``(B,)``: the two distances of a batch of triplets."""
        return self.distances_to(ref, self.represent(x0), self.represent(x1))

    def weights_id(self) -> str:
        """A short hash of the class, parameters and buffers."""
        h = hashlib.sha256(type(self).__qualname__.encode())
        for key, tensor in sorted(self.state_dict().items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def metric_id(self) -> str:
        """Hash of :meth:`weights_id` and of every option that changes the function: part of every cell key."""
        options = {k: v for k, v in self.build_options.items() if k not in self.identity_exclude}
        text = json.dumps({"name": self.name, "options": options, "weights": self.weights_id()},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

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

    def represent(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding: a candidate is embedded once, however often the reference moves."""
        return self.embed(x)

    def distance_to(self, x: torch.Tensor, ey: torch.Tensor) -> torch.Tensor:
        """``compare(embed(x), ey)``."""
        return self.compare(self.embed(x), ey)

    def distances_to(self, ref: torch.Tensor, e0: torch.Tensor, e1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed ``ref`` once and compare it with the candidates' embeddings ``e0``, ``e1``."""
        er = self.embed(ref)
        return self.compare(er, e0), self.compare(er, e1)
