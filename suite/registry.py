"""Registries for metrics, attacks and datasets.

Built-ins register with ``@register(name, aliases=...)`` when their module is
imported (each registry knows which built-in packages to import); entries can
also be lazy ``"module:attr"`` strings, and third-party packages add entries
through the Python entry-point groups ``lipsim_suite.metrics``,
``lipsim_suite.attacks`` and ``lipsim_suite.datasets``. An unknown name fails
with the closest registered names.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable

from suite.errors import SuiteError, UnknownNameError


@dataclass
class Entry:
    name: str
    target: Any  # the object, or a "module:attr" string until first use
    description: str
    aliases: tuple[str, ...] = ()
    origin: str = "builtin"

    def resolve(self) -> Any:
        if isinstance(self.target, str):
            module_name, _, attr = self.target.partition(":")
            try:
                obj = importlib.import_module(module_name)
                for part in attr.split(".") if attr else ():
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as err:
                raise SuiteError(
                    f"{self.name!r} points to {self.target!r} ({self.origin}), which cannot be imported: {err}"
                ) from err
            self.target = obj
            if not self.description:
                self.description = _first_line(obj)
        return self.target


def _first_line(obj: Any) -> str:
    """The first paragraph of the docstring, on one line."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


class Registry:
    """Name -> factory mapping for one kind of component."""

    def __init__(self, kind: str, group: str, builtin_modules: tuple[str, ...] = ()):
        self.kind = kind
        self.group = group
        self.builtin_modules = builtin_modules
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}
        self._loaded = False

    def register(self, name: str, *, aliases: tuple[str, ...] | list[str] = (), description: str = "") -> Callable:
        """Decorator: ``@METRICS.register("l2", aliases=("mse",))``."""

        def decorate(obj: Any) -> Any:
            self.add(name, obj, description=description or _first_line(obj), aliases=aliases)
            return obj

        return decorate

    def add(self, name: str, target: Any, *, description: str = "", aliases=(), origin: str = "builtin") -> None:
        """Add an entry; ``target`` may be an object or a lazy ``"module:attr"`` string."""
        key = name.lower()
        existing = self._entries.get(key)
        if existing is not None and existing.target is not target and existing.target != target:
            raise SuiteError(f"{self.kind} {name!r} is registered twice ({existing.origin} and {origin})")
        self._entries[key] = Entry(key, target, description, tuple(a.lower() for a in aliases), origin)
        for alias in aliases:
            self._aliases[alias.lower()] = key

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self.builtin_modules:
            importlib.import_module(module)
        for ep in entry_points(group=self.group):
            if ep.name.lower() not in self._entries:
                self.add(ep.name, ep.value, origin=f"entry point of {ep.dist.name if ep.dist else '?'}")

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def canonical(self, name: str) -> str:
        self._load()
        key = str(name).lower()
        key = self._aliases.get(key, key)
        if key not in self._entries:
            options = sorted(set(self._entries) | set(self._aliases))
            close = difflib.get_close_matches(key, options, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} (registered: {', '.join(sorted(self._entries)) or 'none'})"
            )
        return key

    def get(self, name: str) -> Any:
        return self._entries[self.canonical(name)].resolve()

    def build(self, name: str, expected: type, **options) -> Any:
        """Call the factory registered as ``name`` with ``options``; check the result is an ``expected``.

        Options are bound to the factory's signature first, so a misspelt option is
        reported as such (with the accepted ones) instead of as an error from deep inside.
        """
        factory = self.get(name)
        key = self.canonical(name)
        try:
            inspect.signature(factory).bind(**options)
        except TypeError as err:
            accepted = [p for p in inspect.signature(factory).parameters if p not in ("self", "args", "kwargs")]
            raise SuiteError(f"{self.kind} {key!r}: bad options {sorted(options)} ({err}); "
                             f"accepted: {', '.join(accepted) or 'none'}") from None
        except ValueError:  # builtins without a signature: let the call decide
            pass
        obj = factory(**options)
        if not isinstance(obj, expected):
            raise SuiteError(f"{self.kind} {key!r} must build a {expected.__module__}.{expected.__qualname__}; "
                             f"got {type(obj).__name__}")
        obj.name = key
        return obj

    def describe(self) -> list[tuple[str, str]]:
        """``(name, one-line description)`` for every entry, resolving lazy ones for their docstring."""
        rows = []
        for key in self.names():
            entry = self._entries[key]
            if not entry.description:
                try:
                    entry.resolve()
                except SuiteError as err:
                    entry.description = f"(cannot import: {err})"
            rows.append((key, entry.description))
        return rows

    def __contains__(self, name: str) -> bool:
        try:
            self.canonical(name)
        except UnknownNameError:
            return False
        return True


METRICS = Registry("metric", "lipsim_suite.metrics", ("metrics",))
ATTACKS = Registry("attack", "lipsim_suite.attacks", ("attacks",))
DATASETS = Registry("dataset", "lipsim_suite.datasets", ("suite.datasets",))

REGISTRIES = {"metrics": METRICS, "attacks": ATTACKS, "datasets": DATASETS}


def register_metric(name: str, *, aliases=(), description: str = "") -> Callable:
    return METRICS.register(name, aliases=aliases, description=description)


def register_attack(name: str, *, aliases=(), description: str = "") -> Callable:
    return ATTACKS.register(name, aliases=aliases, description=description)


def register_dataset(name: str, *, aliases=(), description: str = "") -> Callable:
    return DATASETS.register(name, aliases=aliases, description=description)
