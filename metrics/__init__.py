"""Perceptual metrics. ``metrics.load(name, **options)`` is the one door in."""

from __future__ import annotations

from metrics.base import EmbeddingMetric, Metric
from suite.registry import METRICS

# built-ins register themselves on import
from metrics import classic  # noqa: E402,F401
from metrics import lipsim  # noqa: E402,F401


def load(name: str, **options) -> Metric:
    """Build the registered metric ``name`` with ``options`` (weights path, preset, ...), in eval mode."""
    return METRICS.build(name, Metric, **options).eval()


__all__ = ["Metric", "EmbeddingMetric", "load"]
