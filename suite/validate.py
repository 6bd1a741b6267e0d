"""Typed checks of user-given values: the one place where "must be an integer ≥ 1" is written.

Every check returns the value in its canonical type or raises a one-line
:class:`~suite.errors.SuiteError` of the form ``"{what} must be {expected}; got {value!r}"``,
where ``what`` names the option as the user wrote it (with its table, attack or dataset).
Config files, attack and dataset options, training tables and image sizes all go through here.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

from suite.errors import SuiteError


def _fail(what: str, expected: str, value: Any) -> SuiteError:
    return SuiteError(f"{what} must be {expected}; got {value!r}")


def integer(value: Any, what: str, minimum: int | None = None) -> int:
    """An integer (Python or numpy, never a bool or a float) ``≥ minimum``, as ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(what, "an integer" + (f" ≥ {minimum}" if minimum is not None else ""), value)
    if minimum is not None and value < minimum:
        raise _fail(what, f"an integer ≥ {minimum}", value)
    return int(value)


def optional_integer(value: Any, what: str, minimum: int | None = None) -> int | None:
    """``None``, or :func:`integer`."""
    return None if value is None else integer(value, what, minimum)


def number(value: Any, what: str, minimum: float | None = None, *, above: bool = False) -> float:
    """A finite real number (not a bool) ``≥ minimum`` (``> minimum`` with ``above``), as ``float``."""
    bound = "" if minimum is None else f" {'>' if above else '≥'} {minimum:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise _fail(what, f"a finite number{bound}", value)
    if minimum is not None and (value < minimum or (above and value == minimum)):
        raise _fail(what, f"a finite number{bound}", value)
    return float(value)


def optional_number(value: Any, what: str, minimum: float | None = None, *, above: bool = False) -> float | None:
    """``None``, or :func:`number`."""
    return None if value is None else number(value, what, minimum, above=above)


def boolean(value: Any, what: str) -> bool:
    """``True`` or ``False`` exactly (TOML booleans; ``1`` and ``"yes"`` are refused)."""
    if not isinstance(value, bool):
        raise _fail(what, "true or false", value)
    return value


def choice(value: Any, choices: Iterable[str], what: str) -> str:
    """``value`` if it is one of ``choices``; otherwise the error lists them."""
    choices = tuple(choices)
    if value not in choices:
        raise _fail(what, f"one of {', '.join(choices)}", value)
    return value


def text(value: Any, what: str) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise _fail(what, "a non-empty string", value)
    return value


def mapping(value: Any, what: str) -> dict:
    """A table of options (a ``dict``), copied."""
    if not isinstance(value, dict):
        raise _fail(what, "a table of options", value)
    return dict(value)


def image_size(value: Any, what: str) -> int:
    """A side length in pixels: a positive integer."""
    return integer(value, f"{what}: image_size (pixels)", 1)


__all__ = ["boolean", "choice", "image_size", "integer", "mapping", "number", "optional_integer",
           "optional_number", "text"]
