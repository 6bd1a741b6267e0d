"""Run configuration: a TOML file validated once, at the edge, into typed objects.

Layout (see ``configs/demo.toml`` for a commented example)::

    [run]                      # name, results folder, seed, batch size, parallelism, device
    [[train]]                  # optional models trained before the grid (parsed by jobs.train)
    [[metrics]]                # name, label, options, from_train
    [[datasets]]               # name, splits, limit, options
    [[evaluations]]            # kind = natural | attack | certified | distance

Resources. Each cell's shards run on Ray actors holding ``[run] cpus_per_cell`` CPUs
(torch's intra-op threads follow them) and a GPU share: ``num_gpus`` (a number ≥ 0,
fractions such as ``0.25`` let several actors share one GPU) of the ``[[evaluations]]``
table if it gives one, else that of the ``[[metrics]]`` table, else ``[run]
gpus_per_cell`` (default 0): :func:`gpu_share`. E.g. ``num_gpus = 1`` on the DreamSim
metric for its AutoAttack evaluation, ``num_gpus = 0.25`` on a LipSim certification.
Resources change where a cell runs, never its results: they are not part of its key.
A share the Ray cluster cannot hold stops the run before anything is computed
(``jobs/cluster.py: check_gpus``).

Relative paths in the file (``results``, dataset ``root``, metric ``weights``)
are resolved against the folder the command runs in, as a user typing them expects.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from suite import validate
from suite.errors import SuiteError
from suite.schema import EVALUATION_KINDS as KINDS
from suite.types import NORMS, THREATS


@dataclass(frozen=True)
class MetricSpec:
    label: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    #: label of a ``[[train]]`` table whose trained model(s) provide ``weights``
    from_train: str | None = None
    #: GPUs per actor for this metric's cells (None: ``[run] gpus_per_cell``); see :func:`gpu_share`
    num_gpus: float | None = None


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    splits: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None


@dataclass(frozen=True)
class EvalSpec:
    kind: str
    attack: str = ""
    label: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    threats: tuple[str, ...] = ("ref",)
    #: norm -> budgets (``attack``/``distance``); ``certified`` uses the ``l2`` entry
    eps: dict[str, tuple[float, ...]] = field(default_factory=dict)
    #: GPUs per actor for this evaluation's cells, before the metric's (None: not given); see :func:`gpu_share`
    num_gpus: float | None = None

    @property
    def name(self) -> str:
        """How messages name the evaluation: its label, else its kind."""
        return self.label or self.kind


@dataclass
class RunConfig:
    name: str
    results_dir: Path
    metrics: list[MetricSpec]
    datasets: list[DatasetSpec]
    evaluations: list[EvalSpec]
    train: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    batch_size: int = 32
    max_in_flight: int = 2
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0
    device: str = "auto"
    worst_case: bool = True
    check_invariant: bool = True
    #: samples per shard: a larger cell runs as shards (rounded down to a multiple of batch_size)
    shard_size: int = 256
    #: how often a shard whose worker died (process or node lost, OOM kill) is run again
    max_retries: int = 2
    source: str = ""


def gpu_share(config: RunConfig, metric: MetricSpec, evaluation: EvalSpec) -> float:
    """GPUs per actor for the cells of ``metric`` × ``evaluation``: the evaluation's ``num_gpus`` if given,
    else the metric's, else ``[run] gpus_per_cell``."""
    for share in (evaluation.num_gpus, metric.num_gpus):
        if share is not None:
            return share
    return config.gpus_per_cell


def gpu_count(value: Any, what: str) -> float:
    """A GPU share: a finite number ≥ 0 that Ray can hold (a multiple of 0.0001, Ray's resource unit)."""
    share = validate.number(value, what, 0)
    if share and round(share * 10_000) == 0:
        raise SuiteError(f"{what}: expected a GPU share ≥ 0.0001 (Ray's smallest unit) or 0; got {value!r}")
    return share


def _num_gpus(table: dict, where: str) -> float | None:
    return None if "num_gpus" not in table else gpu_count(table["num_gpus"], f"{where} num_gpus")


def parse_eps(value: Any, where: str) -> float:
    """A budget: a number or a fraction string such as ``"36/255"``; must be finite and ≥ 0."""
    if isinstance(value, str):
        try:
            value = float(Fraction(value))
        except (ValueError, ZeroDivisionError):
            raise SuiteError(f"{where}: ε must be a number or a fraction like \"8/255\"; got {value!r}") from None
    return validate.number(value, f"{where}: ε", 0)


def _table(data: dict, key: str, where: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SuiteError(f"{where}: [{key}] must be a table; got {type(value).__name__}")
    return value


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(allowed))}")


def _str_list(value: Any, where: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
        raise SuiteError(f"{where}: expected a string or a non-empty list of strings; got {value!r}")
    if allowed:
        for v in items:
            if v not in allowed:
                raise SuiteError(f"{where}: {v!r} is not one of {', '.join(allowed)}")
    return tuple(items)


def _eps_table(value: Any, where: str, kind: str) -> dict[str, tuple[float, ...]]:
    if kind == "certified" and isinstance(value, list):
        value = {"l2": value}
    if not isinstance(value, dict) or not value:
        raise SuiteError(f"{where}: eps must be a table of norm = [budgets], e.g. eps = {{ l2 = [0.5, 1.0] }}; got {value!r}")
    out = {}
    for norm, budgets in value.items():
        if norm not in NORMS:
            raise SuiteError(f"{where}: unknown norm {norm!r} in eps; expected {', '.join(NORMS)}")
        if kind == "certified" and norm != "l2":
            raise SuiteError(f"{where}: certificates are ℓ2 only; got eps for {norm!r}")
        budgets = budgets if isinstance(budgets, list) else [budgets]
        if not budgets:
            raise SuiteError(f"{where}: eps.{norm} is empty")
        out[norm] = tuple(parse_eps(b, f"{where} eps.{norm}") for b in budgets)
    return out


#: how a certified evaluation certifies: the metric's own Lipschitz certificate, or randomized smoothing
CERTIFICATION_METHODS = ("lipschitz", "smoothing")


def _smoothing_options(options: dict, where: str) -> None:
    """The options of randomized smoothing (Cohen et al. 2019), checked and completed with the paper's defaults:
    ``sigma`` (required), ``n0 = 100``, ``n = 100000``, ``alpha = 0.001``, ``chunk = 256``."""
    allowed = {"sigma", "n0", "n", "alpha", "chunk"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise SuiteError(f"{where}: unknown smoothing option(s) {', '.join(unknown)}; expected some of "
                         f"{', '.join(sorted(allowed))}")
    if "sigma" not in options:
        raise SuiteError(f"{where}: method \"smoothing\" needs options.sigma (the noise level, e.g. 0.25)")
    options["sigma"] = validate.number(options["sigma"], f"{where} options.sigma", 0, above=True)
    options["n0"] = validate.integer(options.get("n0", 100), f"{where} options.n0", 1)
    options["n"] = validate.integer(options.get("n", 100_000), f"{where} options.n", 1)
    options["alpha"] = validate.number(options.get("alpha", 0.001), f"{where} options.alpha", 0, above=True)
    options["chunk"] = validate.integer(options.get("chunk", 256), f"{where} options.chunk", 1)


#: what bounds the ``reached`` distance of a distance evaluation (``options.bound``): the metric's own
#: Lipschitz certificate (the default), or center smoothing (Kumar & Goldstein 2021) of its embedding
DISTANCE_BOUNDS = ("lipschitz", "smoothing")
#: options of a distance evaluation that belong to its bound, not to the distance attack
#: (:func:`split_distance_options`); the rest go to the attack
DISTANCE_BOUND_OPTIONS = ("bound", "sigma", "n0", "n", "alpha", "delta", "output", "candidates", "chunk")
#: center smoothing's output distance: "auto" asks the metric (``suite.smoothed.detect_output``)
DISTANCE_OUTPUTS = ("auto", "cosine", "euclidean")


def split_distance_options(options: dict | None) -> tuple[dict, dict]:
    """``(attack options, bound options)`` of a distance cell: the attack gets only its own
    (``jobs.tasks.build_attack``), while both stay in the cell's options and so in its key."""
    options = dict(options or {})
    bound = {k: options.pop(k) for k in DISTANCE_BOUND_OPTIONS if k in options}
    return options, bound


def _distance_bound_options(options: dict, where: str) -> None:
    """``options.bound`` of a distance evaluation, checked; for ``"smoothing"`` center smoothing's options
    completed with the defaults of ``suite.smoothed.center_smoothing_bound`` (``sigma`` required;
    ``n = 100000``, ``n0 = 10000``, ``alpha = 0.01``, ``delta = 0.05``, ``chunk = 256``, ``candidates``
    only if given, ``output = "auto"``). ``bound = "lipschitz"`` is the default and leaves no trace,
    so ``{}`` and ``{bound = "lipschitz"}`` are one cell."""
    from suite.smoothed import check_center_options

    bound = validate.choice(options.pop("bound", "lipschitz"), DISTANCE_BOUNDS, f"{where} options.bound")
    given = [k for k in DISTANCE_BOUND_OPTIONS if k in options]
    if bound == "lipschitz":
        if given:
            raise SuiteError(f"{where}: {', '.join('options.' + k for k in given)} only apply with bound = "
                             "\"smoothing\" (center smoothing); the default bound \"lipschitz\" takes none")
        return
    if "sigma" not in options:
        raise SuiteError(f"{where}: bound \"smoothing\" needs options.sigma (the noise level, e.g. 0.25)")
    output = validate.choice(options.pop("output", "auto"), DISTANCE_OUTPUTS, f"{where} options.output")
    try:
        checked = check_center_options(**{k: options.pop(k) for k in given if k in options})
    except SuiteError as err:
        raise SuiteError(f"{where} options: {err}") from None
    options.update(checked, bound="smoothing", output=output)


def _resolve(path: Any, base: Path) -> str:
    p = Path(str(path)).expanduser()
    return str(p if p.is_absolute() else (base / p))


def parse_config(data: dict, *, source: str = "", base_dir: Path | None = None, data_root: str | None = None,
                 results_dir: str | None = None) -> RunConfig:
    """Validate a config dictionary (as read from TOML) into a :class:`RunConfig`."""
    where = source or "config"
    base = base_dir or Path.cwd()
    _check_keys(data, {"run", "train", "metrics", "datasets", "evaluations"}, where)
    run = _table(data, "run", where)
    _check_keys(run, {"name", "results", "seed", "batch_size", "max_in_flight", "cpus_per_cell", "gpus_per_cell",
                      "device", "worst_case", "check_invariant", "shard_size", "max_retries"}, f"{where} [run]")
    name = str(run.get("name", Path(source).stem if source else "run"))
    results = Path(_resolve(results_dir or run.get("results", f"results/{name}"), base))

    metrics = []
    for i, t in enumerate(data.get("metrics", [])):
        w = f"{where} [[metrics]] #{i + 1}"
        _check_keys(t, {"name", "label", "options", "from_train", "num_gpus"}, w)
        if "name" not in t:
            raise SuiteError(f"{w}: missing 'name'")
        options = dict(t.get("options", {}))
        if "weights" in options and options["weights"]:
            options["weights"] = _resolve(options["weights"], base)
        metrics.append(MetricSpec(str(t.get("label", t["name"])), str(t["name"]), options, t.get("from_train"),
                                  num_gpus=_num_gpus(t, w)))
    labels = [m.label for m in metrics]
    if not metrics:
        raise SuiteError(f"{where}: no [[metrics]] given")
    if len(set(labels)) != len(labels):
        raise SuiteError(f"{where}: metric labels must be unique; got {labels}")

    datasets = []
    for i, t in enumerate(data.get("datasets", [])):
        w = f"{where} [[datasets]] #{i + 1}"
        _check_keys(t, {"name", "splits", "split", "limit", "options"}, w)
        if "name" not in t:
            raise SuiteError(f"{w}: missing 'name'")
        options = dict(t.get("options", {}))
        if "root" in options:
            options["root"] = _resolve(options["root"], base)
        elif data_root is not None and t["name"] in ("nights", "bapps", "copydays", "image-pairs"):
            options["root"] = _resolve(data_root, base)
        limit = t.get("limit")
        if limit is not None:
            limit = validate.integer(limit, f"{w} limit", 1)
        splits = _str_list(t.get("splits", t.get("split", "test")), f"{w} splits")
        datasets.append(DatasetSpec(str(t["name"]), splits, options, limit))
    if not datasets:
        raise SuiteError(f"{where}: no [[datasets]] given")

    evaluations = []
    for i, t in enumerate(data.get("evaluations", [{"kind": "natural"}])):
        w = f"{where} [[evaluations]] #{i + 1}"
        _check_keys(t, {"kind", "attack", "label", "options", "threats", "eps", "num_gpus"}, w)
        kind = t.get("kind")
        if kind not in KINDS:
            raise SuiteError(f"{w}: kind must be one of {', '.join(KINDS)}; got {kind!r}")
        threats = _str_list(t.get("threats", "ref"), f"{w} threats", THREATS)
        num_gpus = _num_gpus(t, w)
        if kind == "natural":
            evaluations.append(EvalSpec("natural", num_gpus=num_gpus))
            continue
        if "eps" not in t:
            raise SuiteError(f"{w}: kind {kind!r} needs eps")
        eps = _eps_table(t["eps"], w, kind)
        attack = str(t.get("attack", {"distance": "distance", "minnorm": "minnorm"}.get(kind, "")))
        if kind == "attack" and not attack:
            raise SuiteError(f"{w}: kind 'attack' needs attack = \"pgd\" (or another registered attack)")
        options = validate.mapping(t.get("options", {}), f"{w} options")
        if kind == "certified":
            method = validate.choice(options.pop("method", "lipschitz"), CERTIFICATION_METHODS, f"{w} options.method")
            attack = "" if method == "lipschitz" else method
            if method == "smoothing":
                _smoothing_options(options, w)
        if kind == "distance":
            _distance_bound_options(options, w)
        label = str(t.get("label", attack))
        evaluations.append(EvalSpec(kind, attack, label, options, threats, eps, num_gpus=num_gpus))

    train = data.get("train", [])
    if not isinstance(train, list):
        raise SuiteError(f"{where}: [[train]] must be an array of tables")

    def integer(key, default, minimum):
        return validate.integer(run.get(key, default), f"{where} [run] {key}", minimum)

    def number(key, default, minimum):
        return validate.number(run.get(key, default), f"{where} [run] {key}", minimum)

    return RunConfig(
        name=name,
        results_dir=results,
        metrics=metrics,
        datasets=datasets,
        evaluations=evaluations,
        train=train,
        seed=integer("seed", 0, 0),
        batch_size=integer("batch_size", 32, 1),
        max_in_flight=integer("max_in_flight", 2, 1),
        cpus_per_cell=number("cpus_per_cell", 1.0, 0),
        gpus_per_cell=gpu_count(run.get("gpus_per_cell", 0.0), f"{where} [run] gpus_per_cell"),
        device=str(run.get("device", "auto")),
        worst_case=bool(run.get("worst_case", True)),
        check_invariant=bool(run.get("check_invariant", True)),
        shard_size=integer("shard_size", RunConfig.shard_size, 1),
        max_retries=integer("max_retries", RunConfig.max_retries, 0),
        source=source,
    )


def load_config(path: str | Path, **overrides) -> RunConfig:
    """Read and validate a TOML run config; every problem is a one-line :class:`SuiteError`."""
    p = Path(path)
    if not p.is_file():
        raise SuiteError(f"config file {str(p)!r} not found (expected a TOML file such as configs/demo.toml)")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"config {str(p)!r} is not valid TOML: {err}") from None
    except UnicodeDecodeError:
        raise SuiteError(f"config {str(p)!r} is not UTF-8 text") from None
    return parse_config(data, source=str(p), **overrides)
