"""95% intervals of a mean 2AFC score: the percentile bootstrap over samples, with a fixed seed.

A 2AFC score per sample is a fraction in ``[0, 1]`` (``1 − j`` or ``j``), not a coin
flip, so no exact binomial interval applies; the bootstrap needs no assumption about its
distribution. Each entry is resampled with its own generator seeded by :data:`SEED`, so an
interval depends only on that entry's scores, never on the order entries are visited.
"""

from __future__ import annotations

import numpy as np

#: resamples per interval, and the seed of every interval's generator
RESAMPLES = 1000
SEED = 0
LEVEL = 0.95

_CHUNK = 4_000_000  # resampled values per block: bounds memory for large splits (NIGHTS test, BAPPS)


def bootstrap_interval(values: np.ndarray | list[float], *, resamples: int = RESAMPLES, seed: int = SEED,
                       level: float = LEVEL) -> tuple[float, float] | None:
    """The percentile-bootstrap ``level`` interval of ``mean(values)``; ``None`` for fewer than 2 values.

    Draws ``resamples`` samples of ``len(values)`` with replacement (``numpy``'s
    ``default_rng(seed)``) and returns the ``(1 − level)/2`` and ``(1 + level)/2``
    quantiles of their means (linear interpolation).
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    n = x.size
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    per_block = max(1, _CHUNK // n)
    means = np.empty(resamples)
    for start in range(0, resamples, per_block):
        stop = min(resamples, start + per_block)
        means[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


__all__ = ["LEVEL", "RESAMPLES", "SEED", "bootstrap_interval"]
