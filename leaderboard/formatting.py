"""How the leaderboard writes budgets, norms, scores and options (page, Markdown, text table, figures)."""

from __future__ import annotations

import math
from typing import Any

NORM_LABELS = {"l2": "ℓ2", "linf": "ℓ∞", "l1": "ℓ1"}


def fmt_eps(eps: float) -> str:
    """A budget as people write it: ``0.5`` → ``"0.5"``, ``8/255`` → ``"8/255 (0.0314)"``.

    The ``k/255`` form is shown when ε is within 1e-6 of it and has no short decimal
    form (``0.2`` is ``51/255`` too, but nobody writes it so).
    """
    eps = float(eps)
    if eps == 0:
        return "0"
    short = fmt_eps_short(eps)
    if "/" in short:
        return f"{short} ({f'{eps:.4f}'.rstrip('0')})"
    return short


def fmt_eps_short(eps: float) -> str:
    """:func:`fmt_eps` without the decimal value: ``8/255`` → ``"8/255"`` (axis ticks, narrow headers)."""
    eps = float(eps)
    if eps == 0:
        return "0"
    if abs(eps - round(eps, 3)) > 1e-9:
        k = round(eps * 255)
        if 0 < k < 255 and abs(eps - k / 255) <= 1e-6:
            return f"{k}/255"
    return f"{eps:.4g}"


def fmt_norm(norm: str) -> str:
    """``"l2"`` → ``"ℓ2"``, ``"linf"`` → ``"ℓ∞"``; other names unchanged."""
    return NORM_LABELS.get(norm, norm)


def fmt_num(value: float | None, digits: int) -> str:
    """A number with ``digits`` decimals, ``—`` for none, ``∞`` / ``−∞`` for infinities."""
    if value is None:
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}f}"


def fmt_value(value: Any) -> str:
    """An option value as a config would write it (tuples and lists as ``[a, b]``)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return str(value)


def fmt_options(options: dict[str, Any]) -> str:
    """``{"n_iter": 5, "n_queries": 25}`` → ``"n_iter=5, n_queries=25"`` (sorted by name)."""
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in sorted(options.items()))


__all__ = ["NORM_LABELS", "fmt_eps", "fmt_eps_short", "fmt_norm", "fmt_num", "fmt_options", "fmt_value"]
