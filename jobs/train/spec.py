"""``[[train]]`` tables of a run config, validated once into :class:`TrainSpec` objects.

One table trains one LipSim model (or one per margin of ``margins``)::

    [[train]]
    name = "lipsim-tiny"          # label that [[metrics]] entries refer to (from_train)
    stage = "finetune"            # or "distill"
    preset = "tiny"               # LipSim architecture; model_options = { conv_depth = 2 } overrides fields
    dataset = "synthetic-2afc"    # any registered 2AFC dataset (finetune; optional for distill: validation only)
    split = "train"
    val_split = "val"             # "" disables the per-epoch validation score
    dataset_options = { count = 512, image_size = 64 }
    margin = 0.5                  # or margins = [0.2, 0.4, 0.5]: one model per margin, "<name>-m0.2", ...
    epochs = 4
    batch_size = 32               # global batch, split evenly over the workers
    lr = 1e-3
    num_workers = 1
    use_gpu = false
    output = "models/lipsim-tiny" # relative to the run's results folder

Distillation tables use ``teacher`` (a registered metric with ``embed``),
``teacher_options``, ``images`` (an image folder; default: crops of the embedded
photographs, ``image_count`` of them) and ``image_size``. Every other key is listed
in :data:`FIELDS`. ``init`` is a checkpoint path (absolute, or relative to the
current directory) or the ``name`` of another ``[[train]]`` table, which then runs first.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metrics.lipsim.losses import DECAYS
from suite import validate
from suite.errors import SuiteError

STAGES = ("finetune", "distill")


@dataclass(frozen=True)
class TrainSpec:
    """One training run, validated. Paths are absolute; ``to_dict``/``from_dict`` round-trip through JSON."""

    name: str
    stage: str
    output: Path
    preset: str = "tiny"
    model_options: dict = field(default_factory=dict)
    #: checkpoint to start from (folder or file accepted by ``metrics.lipsim.checkpoint.load``)
    init: Path | None = None
    #: label of the [[train]] table that produces ``init`` (it must finish first)
    init_from: str | None = None
    dataset: str | None = None
    split: str = "train"
    val_split: str | None = "val"
    dataset_options: dict = field(default_factory=dict)
    #: overrides of ``dataset_options`` for the validation split (e.g. a smaller count)
    val_options: dict = field(default_factory=dict)
    margin: float = 0.5
    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 0.0
    decay: str = "cosine"
    num_workers: int = 1
    use_gpu: bool = False
    #: CPU cores Ray reserves for each worker; on CPU the worker runs that many torch threads
    cpus_per_worker: int = 1
    seed: int = 0
    #: DataLoader worker processes per training worker (0: load in the training process)
    loader_workers: int = 0
    teacher: str = "dreamsim"
    teacher_options: dict = field(default_factory=dict)
    #: image folder for distillation (``root/<class>/*.jpg``, recursive); None: embedded photographs
    images: Path | None = None
    image_count: int = 2048
    #: side of the training images; None: the model's input size
    image_size: int | None = None
    #: teacher embeddings per cache shard
    shard_size: int = 1024
    cache_dir: Path | None = None

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, Path):
                data[key] = str(value)
            elif isinstance(value, tuple):
                data[key] = list(value)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainSpec":
        data = dict(data)
        for key in ("output", "init", "images", "cache_dir"):
            if data.get(key) is not None:
                data[key] = Path(data[key])
        data["betas"] = tuple(data["betas"])
        return cls(**data)

    def recipe(self) -> dict:
        """The fields that determine the trained model: a finished or interrupted run with another recipe
        in the same output folder is an error, never silently mixed. Worker count and device may change
        between an interruption and its resumption."""
        data = self.to_dict()
        for key in ("num_workers", "use_gpu", "cpus_per_worker", "loader_workers", "cache_dir", "output", "init_from"):
            data.pop(key)
        if self.stage == "finetune":
            for key in ("teacher", "teacher_options", "images", "image_count", "shard_size"):
                data.pop(key)
        else:
            data.pop("margin")
        return data

    def recipe_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.recipe(), sort_keys=True).encode()).hexdigest()[:16]


#: keys a [[train]] table may hold (``margins`` expands into one spec per margin)
FIELDS = tuple(f.name for f in dataclasses.fields(TrainSpec) if f.name not in ("init_from",)) + ("margins", "root")
_DISTILL_ONLY = ("teacher", "teacher_options", "images", "image_count", "shard_size")


def margin_label(name: str, margin: float) -> str:
    """Label of one model of a margin sweep: ``lipsim-tiny`` and 0.2 give ``lipsim-tiny-m0.2``."""
    return f"{name}-m{margin:g}"


def parse_train_tables(tables: list[dict], results_dir: Path) -> list[TrainSpec]:
    """Validate every ``[[train]]`` table and expand margin sweeps; relative ``output`` paths are under
    ``results_dir``. Any bad value is a :class:`SuiteError` naming the table and the field."""
    if not isinstance(tables, list):
        raise SuiteError(f"[[train]] must be an array of tables; got {type(tables).__name__}")
    results_dir = Path(results_dir).expanduser().resolve()
    specs: list[TrainSpec] = []
    for index, table in enumerate(tables):
        specs.extend(_parse_table(table, index, results_dir))
    _check_unique(specs)
    return _link_inits(specs)


def _parse_table(table: Any, index: int, results_dir: Path) -> list[TrainSpec]:
    where = f"[[train]] #{index + 1}"
    if not isinstance(table, dict):
        raise SuiteError(f"{where}: expected a table; got {type(table).__name__}")
    name = table.get("name")
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise SuiteError(f"{where}: name must be a non-empty string without '/'; got {name!r}")
    where = f"[[train]] {name!r}"
    unknown = sorted(set(table) - set(FIELDS))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, FIELDS, n=1)
            hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
        raise SuiteError(f"{where}: unknown keys {', '.join(hints)}; expected some of {', '.join(sorted(FIELDS))}")

    stage = table.get("stage", "finetune")
    if stage not in STAGES:
        raise SuiteError(f"{where}: stage must be one of {', '.join(STAGES)}; got {stage!r}")
    if stage == "finetune":
        stray = [k for k in _DISTILL_ONLY if k in table]
        if stray:
            raise SuiteError(f"{where}: {', '.join(stray)} apply to stage = \"distill\" only")
    elif "margin" in table or "margins" in table:
        raise SuiteError(f"{where}: margin applies to stage = \"finetune\" only (distillation regresses embeddings)")

    v = _Validator(where, table)
    values: dict[str, Any] = {"name": name, "stage": stage}
    values["preset"] = v.preset()
    values["model_options"] = v.mapping("model_options")
    values["epochs"] = v.integer("epochs", 1, TrainSpec.epochs)
    values["num_workers"] = v.integer("num_workers", 1, TrainSpec.num_workers)
    values["batch_size"] = v.integer("batch_size", 1, TrainSpec.batch_size)
    if values["batch_size"] < values["num_workers"]:
        raise SuiteError(f"{where}: batch_size ({values['batch_size']}) is the global batch and must be at least "
                         f"num_workers ({values['num_workers']})")
    values["lr"] = v.number("lr", TrainSpec.lr, low=0.0, low_open=True)
    values["betas"] = v.betas()
    values["warmup_epochs"] = v.number("warmup_epochs", TrainSpec.warmup_epochs, low=0.0)
    if values["warmup_epochs"] > values["epochs"]:
        raise SuiteError(f"{where}: warmup_epochs ({values['warmup_epochs']}) exceeds epochs ({values['epochs']})")
    values["decay"] = v.choice("decay", DECAYS, TrainSpec.decay)
    values["use_gpu"] = v.boolean("use_gpu", TrainSpec.use_gpu)
    values["cpus_per_worker"] = v.integer("cpus_per_worker", 1, TrainSpec.cpus_per_worker)
    values["seed"] = v.integer("seed", 0, TrainSpec.seed)
    values["loader_workers"] = v.integer("loader_workers", 0, TrainSpec.loader_workers)
    values["image_size"] = v.integer("image_size", 1, None)
    values["cache_dir"] = v.path("cache_dir", must_exist=False) or _default_cache_dir()

    _parse_init(v, values)
    _parse_model(where, values)
    _parse_dataset(v, values, required=stage == "finetune")
    if stage == "distill":
        values["teacher"] = v.metric_with_embed("teacher", TrainSpec.teacher)
        values["teacher_options"] = v.mapping("teacher_options")
        values["images"] = v.path("images", must_exist=True, folder=True)
        values["image_count"] = v.integer("image_count", 1, TrainSpec.image_count)
        values["shard_size"] = v.integer("shard_size", 1, TrainSpec.shard_size)

    output = v.string("output", f"models/{name}")
    output_path = Path(output).expanduser()
    output_path = output_path if output_path.is_absolute() else results_dir / output_path

    if stage == "distill":
        return [TrainSpec(output=output_path, **values)]
    if "margin" in table and "margins" in table:
        raise SuiteError(f"{where}: give margin or margins, not both")
    if "margins" in table:
        margins = table["margins"]
        if not isinstance(margins, list) or not margins:
            raise SuiteError(f"{where}: margins must be a non-empty list of numbers; got {margins!r}")
        margins = [v.number("margins", None, low=0.0, value=m) for m in margins]
        if len(set(margins)) != len(margins):
            raise SuiteError(f"{where}: margins has duplicates: {margins}")
        return [
            TrainSpec(**{**values, "name": margin_label(name, m)}, margin=m,
                      output=output_path.with_name(f"{output_path.name}-m{m:g}"))
            for m in margins
        ]
    return [TrainSpec(output=output_path, margin=v.number("margin", TrainSpec.margin, low=0.0), **values)]


def _default_cache_dir() -> Path:
    from suite.datasets.synthetic import default_cache_dir

    return default_cache_dir().resolve()


def _parse_init(v: "_Validator", values: dict) -> None:
    init = v.table.get("init")
    if init is None or init == "":
        values["init"] = None
        return
    if not isinstance(init, str):
        raise SuiteError(f"{v.where}: init must be a checkpoint path or the name of another [[train]] table; got {init!r}")
    path = Path(init).expanduser()
    if path.exists():
        values["init"] = path.resolve()
    else:
        # perhaps another table's name: resolved (or rejected) once every table is parsed
        values["init"], values["init_from"] = None, init


def _parse_model(where: str, values: dict) -> None:
    from metrics.lipsim.presets import preset

    try:
        config = preset(values["preset"], **values["model_options"])
    except TypeError as err:
        raise SuiteError(f"{where}: bad model_options {sorted(values['model_options'])}: {err}") from None
    except SuiteError as err:
        raise SuiteError(f"{where}: {err}") from None
    if values["image_size"] is not None and values["init"] is None and values["image_size"] != config.input_size:
        raise SuiteError(f"{where}: image_size {values['image_size']} differs from the model's input size "
                         f"{config.input_size} (preset {values['preset']!r}); set model_options.input_size too")


def _parse_dataset(v: "_Validator", values: dict, required: bool) -> None:
    from suite.registry import DATASETS

    dataset = v.table.get("dataset", "synthetic-2afc" if required else None)
    values["dataset_options"] = v.mapping("dataset_options")
    values["val_options"] = v.mapping("val_options")
    root = v.table.get("root")
    if root is not None:
        if not isinstance(root, str) or not root:
            raise SuiteError(f"{v.where}: root must be a folder path; got {root!r}")
        values["dataset_options"]["root"] = str(Path(root).expanduser().resolve())
    if dataset is None:
        values["dataset"], values["val_split"] = None, None
        return
    if not isinstance(dataset, str):
        raise SuiteError(f"{v.where}: dataset must be a registered dataset name; got {dataset!r}")
    try:
        values["dataset"] = DATASETS.canonical(dataset)
    except SuiteError as err:
        raise SuiteError(f"{v.where}: {err}") from None
    values["split"] = v.string("split", TrainSpec.split)
    val_split = v.table.get("val_split", TrainSpec.val_split if required else None)
    if val_split is not None and not isinstance(val_split, str):
        raise SuiteError(f"{v.where}: val_split must be a split name or \"\" (no validation); got {val_split!r}")
    values["val_split"] = val_split or None
    if "image_size" in values["dataset_options"] and values["image_size"] is not None \
            and values["dataset_options"]["image_size"] != values["image_size"]:
        raise SuiteError(f"{v.where}: dataset_options.image_size ({values['dataset_options']['image_size']}) and "
                         f"image_size ({values['image_size']}) disagree")


def _check_unique(specs: list[TrainSpec]) -> None:
    seen: dict[str, TrainSpec] = {}
    outputs: dict[Path, str] = {}
    for spec in specs:
        if spec.name in seen:
            raise SuiteError(f"[[train]] name {spec.name!r} is used twice")
        seen[spec.name] = spec
        if spec.output in outputs:
            raise SuiteError(f"[[train]] {spec.name!r} and {outputs[spec.output]!r} write to the same output "
                             f"{str(spec.output)!r}")
        outputs[spec.output] = spec.name


def _link_inits(specs: list[TrainSpec]) -> list[TrainSpec]:
    by_name = {s.name: s for s in specs}
    linked = []
    for spec in specs:
        if spec.init_from is not None:
            source = by_name.get(spec.init_from)
            if source is None:
                raise SuiteError(f"[[train]] {spec.name!r}: init {spec.init_from!r} is neither an existing path nor "
                                 f"the name of a [[train]] table (tables: {', '.join(by_name)})")
            spec = dataclasses.replace(spec, init=source.output)
        linked.append(spec)
    for spec in linked:
        seen, current = {spec.name}, spec
        while current.init_from is not None:
            current = by_name[current.init_from]
            if current.name in seen:
                raise SuiteError(f"[[train]] {spec.name!r}: init references form a cycle through {current.name!r}")
            seen.add(current.name)
    return linked


class _Validator:
    """Typed reads of one table's fields, each failure a SuiteError naming the table and the field."""

    def __init__(self, where: str, table: dict):
        self.where, self.table = where, table

    def _fail(self, key: str, expected: str, value: Any) -> SuiteError:
        return SuiteError(f"{self.where}: {key} must be {expected}; got {value!r}")

    def integer(self, key: str, low: int, default: int | None) -> int | None:
        return validate.optional_integer(self.table.get(key, default), f"{self.where}: {key}", low)

    def number(self, key: str, default: float | None, low: float, low_open: bool = False, value: Any = None) -> float:
        value = self.table.get(key, default) if value is None else value
        return validate.number(value, f"{self.where}: {key}", low, above=low_open)

    def boolean(self, key: str, default: bool) -> bool:
        return validate.boolean(self.table.get(key, default), f"{self.where}: {key}")

    def string(self, key: str, default: str) -> str:
        return validate.text(self.table.get(key, default), f"{self.where}: {key}")

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        return validate.choice(self.table.get(key, default), choices, f"{self.where}: {key}")

    def mapping(self, key: str) -> dict:
        return validate.mapping(self.table.get(key, {}), f"{self.where}: {key}")

    def betas(self) -> tuple[float, float]:
        value = self.table.get("betas", list(TrainSpec.betas))
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in value)):
            raise self._fail("betas", "two numbers in [0, 1), e.g. [0.5, 0.9]", value)
        return (float(value[0]), float(value[1]))

    def preset(self) -> str:
        from metrics.lipsim.presets import PRESETS

        value = self.table.get("preset", TrainSpec.preset)
        if not isinstance(value, str) or value.lower() not in PRESETS:
            close = difflib.get_close_matches(str(value).lower(), list(PRESETS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise self._fail("preset", f"one of {', '.join(PRESETS)}{hint}", value)
        return value.lower()

    def path(self, key: str, must_exist: bool, folder: bool = False) -> Path | None:
        value = self.table.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self._fail(key, "a path", value)
        path = Path(value).expanduser().resolve()
        if must_exist and not (path.is_dir() if folder else path.exists()):
            raise self._fail(key, "an existing folder" if folder else "an existing path", value)
        return path

    def metric_with_embed(self, key: str, default: str) -> str:
        from metrics.base import EmbeddingMetric, Metric
        from suite.registry import METRICS

        value = self.table.get(key, default)
        if not isinstance(value, str):
            raise self._fail(key, "a registered metric name", value)
        try:
            canonical = METRICS.canonical(value)
        except SuiteError as err:
            raise SuiteError(f"{self.where}: teacher: {err}; the teacher must be a registered metric with embed "
                             "(set teacher = \"NAME\")") from None
        factory = METRICS.get(canonical)
        if isinstance(factory, type) and issubclass(factory, Metric) and not issubclass(factory, EmbeddingMetric):
            raise SuiteError(f"{self.where}: teacher {value!r} has no embed (it is not an embedding metric); "
                             "distillation needs per-image embeddings")
        return canonical
