"""The benchmark grid: expand a TOML config into cells and run them on Ray, shard by shard.

``lipsim run CONFIG`` and ``python -m jobs.benchmark --config CONFIG`` do the same.
Without ``--address`` (or ``RAY_ADDRESS``) a local Ray cluster is started on the
fly (listening on 127.0.0.1 only); with one, the driver joins that cluster (``ray job
submit`` sets it). The steps: :func:`validate` (bad input fails before anything is
written) → :func:`expand` (the cells) → :func:`run_cells` (each cell split into sample
shards, evaluated by actors that keep their metric loaded: ``jobs/workers.py``) →
:func:`finish` (worst case, invariants, leaderboard). The driver alone writes the
results folder, and holds its lock while it does. Finished cells and finished shards
are kept, so an interrupted run resumes where it stopped; a cell that raises is
recorded as failed and the grid goes on; a shard whose worker died runs again.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from jobs.cluster import GpuRequest, check_gpus, connect
from jobs.shards import Shard, merge, spans
from jobs.tasks import build_attack, build_dataset, build_metric
from suite.cell import Cell
from suite.config import RunConfig, gpu_share, load_config
from suite.errors import MissingWeightsError, SuiteError
from suite.invariants import check_invariants, worst_case_rows
from suite.store import ResultStore, RunLock, cell_key


@dataclass
class Summary:
    results_dir: Path
    total: int = 0
    skipped: int = 0
    computed: int = 0
    failed: list[str] = field(default_factory=list)
    #: done cells whose parquet did not verify (reported once, then recomputed)
    damaged: list[str] = field(default_factory=list)
    #: metrics left out because their weights are not on this machine, with the reason (not a failure)
    not_evaluated: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    leaderboard: Path | None = None
    #: the aggregated table behind the page
    table: Path | None = None
    seconds: float = 0.0
    #: what each worker said when its metric was loaded (pid, node, load seconds, threads)
    workers: list[dict] = field(default_factory=list)
    #: shards run again because their worker was lost (process or node died, OOM kill)
    retried: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.violations


def _metric_info(spec, cache: dict) -> tuple:
    """``(metric id, certifiable, certified threats, random weights, differentiable, certifies retrieval
    matches)`` of a metric spec, from the process's
    one build of it. Missing weights raise :class:`MissingWeightsError` (every time, from the cache)."""
    import json

    key = (spec.name, json.dumps(spec.options, sort_keys=True, default=str))
    if key not in cache:
        try:
            metric = build_metric(spec.name, spec.options)
            cache[key] = (metric.metric_id(), metric.certifiable, tuple(metric.certified_threats),
                          bool(getattr(metric, "random_weights", False)), bool(metric.differentiable),
                          metric.certifiable and callable(getattr(metric, "certified_match_radius", None)))
        except MissingWeightsError as err:
            cache[key] = err
        except SuiteError:
            raise
        except Exception as err:  # noqa: BLE001 - a corrupt weights file or config raises whatever its reader raises
            where = f" from {spec.options['weights']}" if spec.options.get("weights") else ""
            first = (str(err).strip().splitlines() or [""])[0]
            raise SuiteError(f"metric {spec.label!r} cannot be loaded{where} ({type(err).__name__}: {first}); "
                             "check its weights and options") from err
    if isinstance(cache[key], MissingWeightsError):
        raise cache[key]
    return cache[key]


def _center_smoothing_problem(spec, output: str, cache: dict) -> str | None:
    """Why center smoothing cannot bound the distance of metric ``spec`` (``None`` where it can), found before
    any cell runs: a metric without an embedding (SSIM) has nothing to smooth, and with ``output = "auto"`` the
    metric's distance must be ``1 − cos`` or the ℓ2 distance of its embeddings
    (:func:`suite.smoothed.detect_output` on two seeded random 32×32 images; PSNR, a log of a distance, is
    neither). A cell of such a metric could only fail."""
    import json

    import torch

    from suite.smoothed import detect_output

    key = ("center-smoothing", spec.name, json.dumps(spec.options, sort_keys=True, default=str), output)
    if key not in cache:
        metric = build_metric(spec.name, spec.options)
        if not getattr(metric, "has_embed", False):
            cache[key] = "it has no embedding to smooth"
        elif output != "auto":
            cache[key] = None
        else:
            gen = torch.Generator().manual_seed(0)
            x, y = torch.rand(2, 2, 3, 32, 32, generator=gen)
            try:
                detect_output(metric, x, y)
                cache[key] = None
            except SuiteError as err:
                cache[key] = str(err)
    return cache[key]


def not_evaluated_key(spec) -> str:
    """Key of the store entry saying that the metric ``spec`` could not be evaluated here."""
    return cell_key({"kind": "not-evaluated", "metric": spec.label, "metric_name": spec.name,
                     "metric_options": spec.options})


def _dataset_info(name: str, options: dict, split: str, limit: int | None, cache: dict) -> tuple[str, int, str]:
    """``(fingerprint, number of samples, task)`` of a dataset split, from the process's one build of it."""
    import json

    key = ("dataset", name, json.dumps(options, sort_keys=True, default=str), split, limit)
    if key not in cache:
        dataset = build_dataset(name, options, split, limit)
        cache[key] = (dataset.fingerprint(), len(dataset), getattr(dataset, "task", "2afc"))
    return cache[key]


def _attack_goal(ev, norm: str, seed: int, cache: dict) -> str:
    """``"2afc"`` for an attack on triplets, else the retrieval attack's goal (``evasion`` | ``collision``)."""
    import json

    key = ("attack-goal", ev.attack, json.dumps(ev.options, sort_keys=True, default=str), norm)
    if key not in cache:
        attack = build_attack("attack", ev.attack, ev.options, norm=norm, eps=ev.eps[norm][0], threat="ref",
                              seed=seed)
        cache[key] = getattr(attack, "goal", "2afc")
    return cache[key]


def _needs_gradient(ev, seed: int, cache: dict) -> bool:
    """Whether the attack of an ``attack``, ``minnorm`` or ``distance`` evaluation back-propagates
    through the metric (a metric without a gradient is left out of those cells)."""
    import json

    if ev.kind not in ("attack", "minnorm", "distance"):
        return False
    key = ("needs-gradient", ev.kind, ev.attack, json.dumps(ev.options, sort_keys=True, default=str))
    if key not in cache:
        norm = next(iter(ev.eps))
        attack = build_attack(ev.kind, ev.attack, ev.options, norm=norm, eps=ev.eps[norm][0], threat="ref", seed=seed)
        cache[key] = bool(getattr(attack, "needs_gradient", True))
    return cache[key]


#: the ``threat`` of a retrieval cell names who moves and why: the query away from its original
#: (evasion and certificates) or a query onto a chosen gallery item (collision)
RETRIEVAL_THREATS = {"evasion": "query", "collision": "collision"}


def _dataset_fingerprint(ds, split: str, cache: dict) -> str:
    return _dataset_info(ds.name, ds.options, split, ds.limit, cache)[0]


def validate(config: RunConfig, cache: dict | None = None) -> dict:
    """Load every dataset split and every metric that does not wait for training: bad input fails here,
    before anything is written. Returns ``{metric label: MissingWeightsError}`` for the metrics whose
    weights are not on this machine: they are *not evaluated*, which is not an error."""
    cache = {} if cache is None else cache
    for ds in config.datasets:
        for split in ds.splits:
            _dataset_fingerprint(ds, split, cache)
    missing = {}
    for spec in config.metrics:
        if spec.from_train is None:
            try:
                _metric_info(spec, cache)
            except MissingWeightsError as err:
                missing[spec.label] = err
    for ev in config.evaluations:
        if ev.kind in ("attack", "distance", "minnorm"):
            for threat in ev.threats:
                for norm, budgets in ev.eps.items():
                    build_attack(ev.kind, ev.attack, ev.options, norm=norm, eps=budgets[0], threat=threat,
                                 seed=config.seed)
    return missing


def resolve_metrics(config: RunConfig, trained: dict[str, Path], cache: dict | None = None):
    """Expand ``from_train`` references into concrete metric specs, load each once for its weights id."""
    cache = {} if cache is None else cache
    resolved = []
    for spec in config.metrics:
        if spec.from_train is None:
            try:
                _metric_info(spec, cache)
            except MissingWeightsError:
                continue  # recorded as not evaluated by run()
            resolved.append(spec)
            continue
        matches = {label: path for label, path in trained.items()
                   if label == spec.from_train or label.startswith(spec.from_train + "-m")}
        if not matches:
            raise SuiteError(f"metric {spec.label!r}: from_train = {spec.from_train!r} matches no [[train]] table "
                             f"(trained: {', '.join(trained) or 'none'})")
        for label, path in sorted(matches.items()):
            suffix = label[len(spec.from_train):]
            resolved.append(replace(spec, label=spec.label + suffix, options={**spec.options, "weights": str(path)},
                                    from_train=None))
    return {spec.label: (spec, *_metric_info(spec, cache)) for spec in resolved}


def expand(config: RunConfig, trained: dict[str, Path] | None = None, cache: dict | None = None
           ) -> tuple[list[Cell], list[str]]:
    """All cells of the grid, in a stable order, and notes about combinations left out."""
    cache = {} if cache is None else cache
    metrics = resolve_metrics(config, trained or {}, cache)
    datasets = [(ds, split, *_dataset_info(ds.name, ds.options, split, ds.limit, cache)[::2])
                for ds in config.datasets for split in ds.splits]
    cells, notes = [], []
    for label, (spec, metric_id, certifiable, threats, random_weights, differentiable, matches
                ) in metrics.items():
        if random_weights:  # every row of a metric with random weights says so in its label
            label = f"{label} (random weights)"
        for ds, split, fp, task in datasets:
            base = dict(metric=label, metric_name=spec.name, metric_options=spec.options, metric_id=metric_id,
                        dataset=ds.name, dataset_options=ds.options, split=split, limit=ds.limit, dataset_fp=fp,
                        seed=config.seed, batch_size=config.batch_size)
            if task == "retrieval":
                cells.extend(_retrieval_cells(config, base, label, matches, differentiable, notes, cache))
                continue
            for ev in config.evaluations:
                if not differentiable and _needs_gradient(ev, config.seed, cache):
                    notes.append(f"{label} has no gradient; {ev.label or ev.kind!r} needs one and is left out "
                                 "(gradient-free: autoattack with attacks = [\"square\"])")
                    continue
                if ev.kind == "attack" and _attack_goal(ev, next(iter(ev.eps)), config.seed, cache) != "2afc":
                    notes.append(f"attack {ev.label!r} attacks retrieval queries; left out on 2AFC dataset {ds.name!r}")
                    continue
                if ev.kind == "distance" and ev.options.get("bound") == "smoothing":
                    problem = _center_smoothing_problem(spec, ev.options.get("output", "auto"), cache)
                    if problem:
                        notes.append(f"{label}: center-smoothing distance cells {ev.label or ev.kind!r} left out "
                                     f"({problem})")
                        continue
                if ev.kind == "natural":
                    cells.append(Cell(kind="natural", budgets=(0.0,), **base))
                elif ev.kind == "certified" and ev.attack == "smoothing":  # certifies any metric
                    for threat in ev.threats:
                        cells.append(Cell(kind="certified", attack=ev.label, attack_name="smoothing",
                                          attack_options=ev.options, threat=threat, norm="l2",
                                          budgets=ev.eps["l2"], **base))
                elif ev.kind == "certified":
                    for threat in ev.threats:
                        if not certifiable or threat not in threats:
                            notes.append(f"{label}: no certificate for threat {threat!r}; certified cell left out")
                            continue
                        cells.append(Cell(kind="certified", threat=threat, norm="l2", budgets=ev.eps["l2"], **base))
                elif ev.kind == "attack":  # one ladder per (threat, norm): every budget, survivors only
                    for threat in ev.threats:
                        for norm, budgets in ev.eps.items():
                            cells.append(Cell(kind="attack", attack=ev.label, attack_name=ev.attack,
                                              attack_options=ev.options, threat=threat, norm=norm,
                                              budgets=tuple(sorted(set(budgets))), **base))
                elif ev.kind == "minnorm":  # one cell per (threat, norm); eps is the search ceiling
                    for threat in ev.threats:
                        for norm, budgets in ev.eps.items():
                            cells.append(Cell(kind="minnorm", attack=ev.label, attack_name=ev.attack,
                                              attack_options=ev.options, threat=threat, norm=norm,
                                              budgets=(max(budgets),), **base))
                else:
                    for norm, budgets in ev.eps.items():
                        for eps in budgets:
                            cells.append(Cell(kind=ev.kind, attack=ev.label, attack_name=ev.attack,
                                              attack_options=ev.options, threat="ref", norm=norm, budgets=(eps,),
                                              **base))
    return cells, sorted(set(notes))


def _retrieval_cells(config: RunConfig, base: dict, label: str, certifiable: bool, differentiable: bool,
                     notes: list, cache: dict) -> list[Cell]:
    """The cells of one metric on one retrieval split: natural, evasion and collision ladders, and the
    Lipschitz certificate of the top-1 match; what retrieval does not support is left out with a note."""
    cells = []
    for ev in config.evaluations:
        if ev.kind == "natural":
            cells.append(Cell(kind="natural", threat="", budgets=(0.0,), **base))
        elif ev.kind == "attack":
            for norm, budgets in ev.eps.items():
                goal = _attack_goal(ev, norm, config.seed, cache)
                if goal == "2afc":
                    notes.append(f"attack {ev.label!r} attacks 2AFC triplets; left out on retrieval dataset "
                                 f"{base['dataset']!r}")
                    break
                if not differentiable and _needs_gradient(ev, config.seed, cache):
                    notes.append(f"{label} has no gradient; {ev.label!r} needs one and is left out")
                    break
                cells.append(Cell(kind="attack", attack=ev.label, attack_name=ev.attack, attack_options=ev.options,
                                  threat=RETRIEVAL_THREATS[goal], norm=norm, budgets=tuple(sorted(set(budgets))),
                                  **base))
        elif ev.kind == "certified" and ev.attack == "":
            if not certifiable:
                notes.append(f"{label}: no certificate; certified retrieval cell left out")
                continue
            cells.append(Cell(kind="certified", threat="query", norm="l2", budgets=ev.eps["l2"], **base))
        else:
            what = "randomized smoothing" if ev.kind == "certified" else f"kind {ev.kind!r}"
            notes.append(f"{what} is not defined for retrieval; left out on {base['dataset']!r}")
    return cells


def _train(specs: list, progress: bool) -> dict[str, Path]:
    if not specs:
        return {}
    from jobs.train.runner import run_all

    return run_all(specs, progress=progress)


def _one_line(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err
    text = f"{type(cause).__name__}: {cause}".strip()
    return text.splitlines()[0] if isinstance(cause, SuiteError) else text


def run_cells(cells: list[Cell], store: ResultStore, config: RunConfig, summary: Summary, progress: bool,
              cache: dict | None = None, gpus: dict[str, float] | None = None) -> None:
    """Compute every unfinished cell: shards of at most ``[run] shard_size`` samples run on
    ``max_in_flight`` actors (:class:`jobs.workers.WorkerPool`); each finished shard of a
    sharded cell is kept in the store until the cell is complete, then the merged rows are
    written once. Damaged done cells are reported (once) and recomputed. ``gpus``: the GPU
    share of each cell key (:func:`cell_gpus`; a cell not in it holds ``[run] gpus_per_cell``)."""
    from jobs.progress import bar as progress_bar

    from jobs.workers import WorkerPool

    cache = {} if cache is None else cache
    todo = [cell for cell in cells if not _is_done(cell.key, cell.describe(), store, summary)]
    summary.skipped = len(cells) - len(todo)
    bar = progress_bar(total=len(cells), initial=summary.skipped, desc=f"{config.name} cells", unit="cell",
                       disable=not progress)
    pool = WorkerPool(slots=config.max_in_flight, cpus=config.cpus_per_cell, gpus=config.gpus_per_cell,
                      device=config.device, max_retries=config.max_retries)
    plans: dict[str, _Plan] = {}
    shards = finished = 0
    try:
        for cell in todo:
            size = _dataset_info(cell.dataset, cell.dataset_options, cell.split, cell.limit, cache)[1]
            plan = _Plan(cell, spans(size, config.shard_size, cell.batch_size))
            if len(plan.spans) > 1:  # finished shards of an interrupted run are kept
                plan.parts = {span: rows for span, rows in store.read_shards(cell.key).items() if span in plan.spans}
            plans[cell.key] = plan
            for start, stop in plan.missing():
                pool.submit(Shard(cell, start, stop), (gpus or {}).get(cell.key))
                shards += 1
            if not plan.missing():
                _record(plan, store, summary, bar)
        while pool.busy:
            for outcome in pool.wait(timeout=1.0):
                plan = plans[outcome.shard.cell.key]
                if outcome.error is None:
                    finished += 1
                    bar.set_postfix_str(f"shards {finished}/{shards}", refresh=False)
                    plan.parts[outcome.shard.span] = outcome.rows
                    if len(plan.spans) > 1:
                        store.write_shard(plan.cell.key, *outcome.shard.span, outcome.rows)
                    if not plan.missing():
                        _record(plan, store, summary, bar)
                else:
                    pool.drop(plan.cell.key)
                    _record_error(plan, outcome, store, summary, bar)
    finally:
        pool.close()
        bar.close()
    summary.workers, summary.retried = pool.loads, pool.retried


@dataclass
class _Plan:
    """A cell being computed: its shard spans and the rows of those finished so far."""

    cell: Cell
    spans: list[tuple[int, int]]
    parts: dict = field(default_factory=dict)

    def missing(self) -> list[tuple[int, int]]:
        return [span for span in self.spans if span not in self.parts]


def _is_done(key: str, what: str, store: ResultStore, summary: Summary) -> bool:
    """Whether cell ``key`` is done; a damaged one is reported here, once per run, and recomputed."""
    state, problem = store.check(key)
    if problem is not None:
        line = f"{what} [{key}]: {problem}; computing it again"
        summary.damaged.append(line)
        print(f"warning: damaged cell {line}", file=sys.stderr)
    if state == "done":
        store.drop_shards(key)  # left over when a run stopped between writing the cell and cleaning up
        return True
    return False


def _record(plan: _Plan, store: ResultStore, summary: Summary, bar) -> None:
    cell = plan.cell
    try:
        store.write(cell.key, cell.spec(), merge(plan.parts, plan.spans))
        summary.computed += 1
    except Exception as err:  # noqa: BLE001 - rows the store refuses fail the cell, the grid goes on
        message = _one_line(err)
        store.write_failure(cell.key, cell.spec(), message)
        summary.failed.append(f"{cell.describe()}: {message}")
        bar.write(f"cell failed: {cell.describe()}: {message}")
    store.drop_shards(cell.key)
    plan.parts.clear()  # the rows are on disk now; the driver keeps only cells in progress in memory
    bar.update(1)


def _record_error(plan: _Plan, outcome, store: ResultStore, summary: Summary, bar) -> None:
    cell = plan.cell
    if isinstance(outcome.error, MissingWeightsError):  # this worker lacks the weights: not a failure
        store.write_not_evaluated(cell.key, cell.spec(), str(outcome.error))
        summary.not_evaluated.append(f"{cell.describe()}: {outcome.error}")
    else:
        if outcome.system:
            first = (str(outcome.error).strip().splitlines() or [""])[0]
            times = f"{outcome.attempts} time{'s' if outcome.attempts > 1 else ''}"
            message = (f"worker lost {times} on samples {outcome.shard.start}–{outcome.shard.stop} "
                       f"({type(outcome.error).__name__}: {first})")
        else:
            message = _one_line(outcome.error)
        store.write_failure(cell.key, cell.spec(), message)
        summary.failed.append(f"{cell.describe()}: {message}")
        bar.write(f"cell failed: {cell.describe()}: {message}")
    plan.parts.clear()
    bar.update(1)


def finish(cells: list[Cell], store: ResultStore, config: RunConfig, summary: Summary) -> None:
    """Worst-case rows per attack group, the invariant check, and the leaderboard."""
    import polars as pl

    from leaderboard import build

    keys = {c.key for c in cells}
    if config.worst_case:
        groups = defaultdict(list)
        for c in cells:
            if c.kind == "attack":
                groups[(c.metric, c.metric_id, c.dataset, c.split, c.threat, c.norm)].append(c)
        for members in groups.values():
            member_keys = [c.key for c in members]
            if not all(store.is_done(k) for k in member_keys):
                continue
            spec = {"kind": "worst", "rule": "per-sample minimum per eps", "members": sorted(member_keys)}
            key = cell_key(spec)
            keys.add(key)
            if not _is_done(key, f"worst case of {members[0].metric} {members[0].threat} {members[0].norm}", store,
                            summary):
                rows = worst_case_rows([store.read(k) for k in member_keys])
                store.write(key, spec, rows.with_columns(cell=pl.lit(key)))
    if config.check_invariant:
        frames = [store.read(k) for k in sorted(keys) if store.is_done(k)]
        if frames:
            summary.violations = check_invariants(pl.concat(frames, how="vertical_relaxed"))
    summary.table, summary.leaderboard = build(config.results_dir)


def _pairs(config: RunConfig):
    """Every metric × evaluation of the config, with its GPU share and the config of it alone."""
    for metric in config.metrics:
        for ev in config.evaluations:
            yield metric, ev, gpu_share(config, metric, ev), replace(config, metrics=[metric], evaluations=[ev])


def gpu_requests(config: RunConfig, cache: dict | None = None) -> list[GpuRequest]:
    """What each metric × evaluation that has cells asks of the cluster, before training: a pair of a
    metric trained in this run (``from_train``) counts as having cells; a metric whose weights are
    missing, or a pair that makes no cell (a certificate of a metric without one), asks nothing."""
    cache = {} if cache is None else cache
    requests = []
    for metric, ev, share, alone in _pairs(config):
        if share and (metric.from_train is not None or expand(alone, None, cache)[0]):
            setting = "num_gpus" if (ev.num_gpus, metric.num_gpus) != (None, None) else "[run] gpus_per_cell"
            requests.append(GpuRequest(metric.label, ev.name, share, setting))
    return requests


def cell_gpus(config: RunConfig, trained: dict[str, Path] | None = None, cache: dict | None = None
              ) -> dict[str, float]:
    """The GPU share (:func:`suite.config.gpu_share`) of each cell key that a ``num_gpus`` setting
    gives one (empty when no table sets ``num_gpus``: every cell then holds ``[run] gpus_per_cell``).
    Each metric × evaluation is expanded alone, so its cells are known whatever the expansion does;
    a cell two pairs share gets the larger share."""
    if all(m.num_gpus is None for m in config.metrics) and all(e.num_gpus is None for e in config.evaluations):
        return {}
    cache = {} if cache is None else cache
    shares: dict[str, float] = {}
    for _, _, share, alone in _pairs(config):
        for cell in expand(alone, trained, cache)[0]:
            shares[cell.key] = max(shares.get(cell.key, share), share)
    return shares


def run(config: RunConfig, *, address: str | None = None, progress: bool = True, wait: float = 0.0) -> Summary:
    """Run the whole config: training tables, grid cells, worst case, invariants, leaderboard."""
    start = time.perf_counter()
    summary = Summary(results_dir=config.results_dir)
    cache: dict = {}
    missing = validate(config, cache)
    specs = []
    if config.train:
        from jobs.train.spec import parse_train_tables

        specs = parse_train_tables(config.train, config.results_dir)
    with open_results(config.results_dir, wait):
        store = ResultStore(config.results_dir)
        started = connect(address)
        try:
            check_gpus(gpu_requests(config, cache), config.device)  # before anything is trained or written
            record_not_evaluated(config, missing, store, summary)
            trained = _train(specs, progress)
            cells, notes = expand(config, trained, cache)
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
            summary.total = len(cells)
            run_cells(cells, store, config, summary, progress, cache, cell_gpus(config, trained, cache))
            finish(cells, store, config, summary)
        finally:
            if started:
                _shutdown()
    summary.seconds = time.perf_counter() - start
    return summary


def open_results(path: Path, wait: float = 0.0) -> RunLock:
    """Check that this run can write the results folder ``path``, create it, and take its lock.

    A path that is a file, a folder this user cannot write, or a folder another run holds
    (after waiting up to ``wait`` seconds for it, saying so) is a one-line
    :class:`SuiteError`, and nothing is written. A run that waited finds the other run's
    finished cells done and computes only what is left."""
    if path.exists() and not path.is_dir():
        raise SuiteError(f"results path {str(path)!r} is a file, not a folder: give a folder ([run] results or --results)")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SuiteError(f"results path {str(path)!r} cannot be created: {str(existing)!r} is a file, not a folder")
    for folder in (existing, path / "cells"):
        if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
            raise SuiteError(f"results folder {str(folder)!r} is read-only for this user: give a writable folder "
                             "([run] results or --results)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SuiteError(f"cannot create the results folder {str(path)!r} ({err.strerror or err}): give a writable "
                         "folder ([run] results or --results)") from None
    lock = ResultStore.lock_of(path)
    try:
        return lock.acquire()
    except SuiteError as err:
        if wait <= 0:
            raise
        print(f"waiting up to {wait:g} s: {err}", file=sys.stderr, flush=True)
    return lock.acquire(wait=wait)


def _shutdown() -> None:
    """``ray.shutdown()``, not to be cut short by a second Ctrl-C (the first one brought us here)."""
    import signal
    import threading

    import ray

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        ray.shutdown()
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def record_not_evaluated(config: RunConfig, missing: dict, store: ResultStore, summary: Summary) -> None:
    """Store a *not evaluated* entry (with the reason) for each metric whose weights are missing, and drop
    the entries of metrics that can now be evaluated."""
    for spec in config.metrics:
        key = not_evaluated_key(spec)
        if spec.label in missing:
            reason = str(missing[spec.label])
            store.write_not_evaluated(key, {"kind": "not-evaluated", "metric": spec.label, "metric_name": spec.name,
                                            "metric_options": spec.options}, reason)
            summary.not_evaluated.append(f"{spec.label}: {reason}")
        elif store.status(key) == "not-evaluated":
            store.forget(key)


def report(summary: Summary) -> int:
    """Print the outcome; the exit status is non-zero if a cell failed or an invariant broke."""
    import polars as pl

    from leaderboard import text_table

    if summary.table:
        print(text_table(pl.read_parquet(summary.table)))
    print(f"{summary.total} cells: {summary.computed} computed, {summary.skipped} already done, "
          f"{len(summary.failed)} failed ({summary.seconds:.1f} s)")
    if summary.retried or summary.damaged:
        print(f"{summary.retried} shards run again after their worker was lost, "
              f"{len(summary.damaged)} damaged cells computed again")
    if summary.leaderboard:
        print(f"leaderboard: {summary.leaderboard}")
    for line in summary.not_evaluated:
        print(f"not evaluated: {line}", file=sys.stderr)
    for line in summary.failed:
        print(f"failed: {line}", file=sys.stderr)
    for line in summary.violations:
        print(f"INVARIANT VIOLATED: {line}", file=sys.stderr)
    return 0 if summary.ok else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local cluster)")
    parser.add_argument("--data-root", help="root folder for datasets that need one (nights, bapps, copydays, "
                        "image-pairs) when the config gives none")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="if another run holds the results folder, wait up to SECONDS for it, then resume "
                             "from its finished cells (default: 0, stop at once naming the holder)")
    parser.add_argument("--results", help="results folder (default: the config's [run] results, else results/<name>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="TOML run config, e.g. configs/demo.toml")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_main(args)


INTERRUPTED = "interrupted: finished cells and shards are kept; rerun the same command to resume"


def run_main(args) -> int:
    try:
        config = load_config(args.config, data_root=args.data_root, results_dir=args.results)
        summary = run(config, address=args.address, progress=not args.no_progress, wait=args.wait)
    except SuiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    return report(summary)


if __name__ == "__main__":
    sys.exit(main())
