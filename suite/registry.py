"""Registries for metrics, attacks, distance attacks and datasets.

Entries come from Python entry points, the same way for built-ins and plugins, so
this ground-floor module names no package above it:

- group ``lipsim_suite.modules``: an entry named after a registry (``metrics``,
  ``attacks``, ``distance_attacks``, ``datasets``) names a module that registers
  entries on import with ``@register_metric(name, aliases=...)`` and the like. This
  project's ``pyproject.toml`` lists its own packages there;
- groups ``lipsim_suite.metrics``, ``lipsim_suite.attacks``,
  ``lipsim_suite.distance_attacks``, ``lipsim_suite.datasets``: one entry per name,
  ``name = "module:attr"``, imported lazily on first use.

A name or alias that two packages claim is an error naming both, never a silent
drop. An unknown name fails with the closest registered names.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from dataclasses import dataclass
from importlib.metadata import entry_points, packages_distributions
from typing import Any, Callable

from suite.errors import SuiteError, UnknownNameError


@dataclass
class Entry:
    name: str
    target: Any  # the object, or a "module:attr" string until first use
    description: str
    aliases: tuple[str, ...] = ()
    origin: str | _ModuleOrigin = "builtin"

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


MODULES_GROUP = "lipsim_suite.modules"


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return packages_distributions()


def package_of(module: str) -> str:
    """The installed distribution that provides ``module`` (its name), else the module's name."""
    names = _distributions().get(module.partition(".")[0])
    return f"package {names[0]}" if names else f"module {module}"


class _ModuleOrigin:
    """Where a decorated entry comes from, looked up when a message first needs it: the lookup
    (``packages_distributions``, every installed file listed) costs more than a second, and every
    process that imports a registering module (each Ray worker) would pay it at import."""

    def __init__(self, module: str):
        self.module = module

    def __str__(self) -> str:
        return package_of(self.module)

    __repr__ = __str__


def _same_target(a: Any, b: Any) -> bool:
    """Two targets are the same entry: the same object, or a lazy ``"module:attr"`` naming it."""
    def path(t: Any) -> str:
        return t if isinstance(t, str) else f"{getattr(t, '__module__', '')}:{getattr(t, '__qualname__', '')}"

    return a is b or path(a) == path(b)


def _first_line(obj: Any) -> str:
    """The first paragraph of the docstring, on one line."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


class Registry:
    """Name -> factory mapping for one kind of component (see the module docstring)."""

    def __init__(self, kind: str, group: str, collection: str = ""):
        self.kind = kind
        self.group = group
        #: the entry name in ``lipsim_suite.modules`` whose modules register into this registry
        self.collection = collection
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}
        self._loaded = False

    def register(self, name: str, *, aliases: tuple[str, ...] | list[str] = (), description: str = "") -> Callable:
        """Decorator: ``@METRICS.register("l2", aliases=("mse",))``."""

        def decorate(obj: Any) -> Any:
            self.add(name, obj, description=description or _first_line(obj), aliases=aliases,
                     origin=_ModuleOrigin(getattr(obj, "__module__", "") or "?"))
            return obj

        return decorate

    def add(self, name: str, target: Any, *, description: str = "", aliases=(), origin: str = "builtin") -> None:
        """Add an entry; ``target`` may be an object or a lazy ``"module:attr"`` string.

        A name or alias already taken by another target is a :class:`SuiteError` naming both origins.
        """
        key = name.lower()
        existing = self._entries.get(key)
        if existing is not None:
            if _same_target(existing.target, target):
                if not isinstance(target, str):  # the module that a lazy entry named is now imported
                    existing.target = target
                return
            raise SuiteError(f"{self.kind} {name!r} is registered twice ({existing.origin} and {origin}): "
                             "uninstall one of them or rename one")
        if key in self._aliases:
            owner = self._entries[self._aliases[key]]
            raise SuiteError(f"{self.kind} {name!r} ({origin}) is already an alias of {owner.name!r} "
                             f"({owner.origin}): uninstall one of them or rename one")
        for alias in (a.lower() for a in aliases):
            owner = self._entries.get(self._aliases.get(alias, alias))
            if owner is not None:
                raise SuiteError(f"{self.kind} alias {alias!r} of {name!r} ({origin}) is already taken by "
                                 f"{owner.name!r} ({owner.origin}): uninstall one of them or rename one")
        self._entries[key] = Entry(key, target, description, tuple(a.lower() for a in aliases), origin)
        for alias in aliases:
            self._aliases[alias.lower()] = key

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.collection:
            for ep in entry_points(group=MODULES_GROUP, name=self.collection):
                try:
                    importlib.import_module(ep.value)
                except ImportError as err:
                    raise SuiteError(f"{self.kind}s of {_dist(ep)} (module {ep.value!r}) cannot be imported: "
                                     f"{err}") from err
        for ep in entry_points(group=self.group):
            self.add(ep.name, ep.value, origin=_dist(ep))

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
            if not self._entries:
                hint = (f"; no {self.kind} is registered at all: is the project installed "
                        f"(its entry points in group {MODULES_GROUP!r})? run `make install`")
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} (registered: {', '.join(sorted(self._entries)) or 'none'})"
            )
        return key

    def get(self, name: str) -> Any:
        return self._entries[self.canonical(name)].resolve()

    def aliases(self, name: str) -> list[str]:
        """The other names that reach ``name``, sorted."""
        key = self.canonical(name)
        return sorted(alias for alias, target in self._aliases.items() if target == key)

    def bind(self, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` bound to the factory's signature with its defaults filled in (a misspelt
        option is a :class:`SuiteError` listing the accepted ones)."""
        factory = self.get(name)
        key = self.canonical(name)
        try:
            bound = inspect.signature(factory).bind(**options)
        except TypeError as err:
            accepted = [p for p in inspect.signature(factory).parameters if p not in ("self", "args", "kwargs")]
            raise SuiteError(f"{self.kind} {key!r}: bad options {sorted(options)} ({err}); "
                             f"accepted: {', '.join(accepted) or 'none'}") from None
        except ValueError:  # builtins without a signature: let the call decide
            return dict(options)
        bound.apply_defaults()
        variadic = {n for n, p in bound.signature.parameters.items()
                    if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and not bound.arguments.get(n)}
        return {k: v for k, v in bound.arguments.items() if k not in variadic}

    def build(self, name: str, expected: type | tuple[type, ...], **options) -> Any:
        """Call the factory registered as ``name`` with ``options``; check the result is an ``expected``
        (a class, or a tuple of classes as :func:`isinstance` takes).

        Options are bound to the factory's signature first, so a misspelt option is
        reported as such (with the accepted ones) instead of as an error from deep inside.
        """
        factory = self.get(name)
        key = self.canonical(name)
        self.bind(name, options)
        obj = factory(**options)
        if not isinstance(obj, expected):
            kinds = expected if isinstance(expected, tuple) else (expected,)
            names = " or ".join(f"{k.__module__}.{k.__qualname__}" for k in kinds)
            raise SuiteError(f"{self.kind} {key!r} must build a {names}; got {type(obj).__name__}")
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


def _dist(ep) -> str:
    return f"package {ep.dist.name}" if ep.dist is not None else f"entry point {ep.value}"


METRICS = Registry("metric", "lipsim_suite.metrics", "metrics")
ATTACKS = Registry("attack", "lipsim_suite.attacks", "attacks")
DISTANCE_ATTACKS = Registry("distance attack", "lipsim_suite.distance_attacks", "distance_attacks")
DATASETS = Registry("dataset", "lipsim_suite.datasets", "datasets")

REGISTRIES = {"metrics": METRICS, "attacks": ATTACKS, "distance-attacks": DISTANCE_ATTACKS, "datasets": DATASETS}


def register_metric(name: str, *, aliases=(), description: str = "") -> Callable:
    return METRICS.register(name, aliases=aliases, description=description)


def register_attack(name: str, *, aliases=(), description: str = "") -> Callable:
    return ATTACKS.register(name, aliases=aliases, description=description)


def register_distance_attack(name: str, *, aliases=(), description: str = "") -> Callable:
    return DISTANCE_ATTACKS.register(name, aliases=aliases, description=description)


def register_dataset(name: str, *, aliases=(), description: str = "") -> Callable:
    return DATASETS.register(name, aliases=aliases, description=description)
