"""Perceptual metrics. ``metrics.load(name, **options)`` is the one door in.

The contract every metric follows is in :mod:`metrics.base`.
"""

from __future__ import annotations

from metrics.base import EmbeddingMetric, Metric
from suite.registry import METRICS

# built-ins register themselves on import
from metrics import classic  # noqa: E402,F401
from metrics import clip  # noqa: E402,F401
from metrics import dino  # noqa: E402,F401
from metrics import dists  # noqa: E402,F401
from metrics import dreamsim  # noqa: E402,F401
from metrics import hashes  # noqa: E402,F401
from metrics import lipsim  # noqa: E402,F401
from metrics import lpips  # noqa: E402,F401


def load(name: str, **options) -> Metric:
    """Build the registered metric ``name`` with ``options`` (weights path, preset, ...), in eval mode.

    The options as bound to the constructor (defaults filled in) are kept in
    ``build_options``: :meth:`Metric.metric_id` hashes them.
    """
    metric = METRICS.build(name, Metric, **options).eval()
    metric.build_options = METRICS.bind(name, options)
    return metric


__all__ = ["Metric", "EmbeddingMetric", "load"]
