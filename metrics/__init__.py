"""Perceptual metrics. ``metrics.load(name, **options)`` is the one door in."""

from __future__ import annotations

from metrics.base import EmbeddingMetric, Metric
from suite.errors import SuiteError
from suite.registry import METRICS

# built-ins register themselves on import
from metrics import classic  # noqa: E402,F401
from metrics import lipsim  # noqa: E402,F401


def load(name: str, **options) -> Metric:
    """Build the registered metric ``name`` with ``options`` (weights path, preset, ...), in eval mode."""
    factory = METRICS.get(name)
    try:
        metric = factory(**options)
    except TypeError as err:
        raise SuiteError(f"metric {name!r}: bad options {sorted(options)}: {err}") from err
    if not isinstance(metric, Metric):
        raise SuiteError(f"metric {name!r} must build a metrics.Metric; got {type(metric).__name__}")
    metric.name = METRICS.canonical(name)
    return metric.eval()


__all__ = ["Metric", "EmbeddingMetric", "load"]
