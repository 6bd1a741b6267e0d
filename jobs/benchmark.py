"""The benchmark grid: expand a TOML config into cells and run each cell as a Ray task.

``lipsim run CONFIG`` and ``python -m jobs.benchmark --config CONFIG`` do the same.
Without ``--address`` (or ``RAY_ADDRESS``) a local Ray cluster is started on the
fly; with one, the driver joins that cluster (``ray job submit`` sets it). Cells
whose results are already in the store are skipped, so an interrupted run resumes
where it stopped; a cell that raises is recorded as failed and the grid goes on.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from jobs.cluster import connect
from jobs.tasks import build_attack, build_dataset, build_metric, run_cell
from suite.cell import Cell
from suite.config import RunConfig, load_config
from suite.errors import MissingWeightsError, SuiteError
from suite.invariants import check_invariants, worst_case_rows
from suite.store import ResultStore, cell_key


@dataclass
class Summary:
    results_dir: Path
    total: int = 0
    skipped: int = 0
    computed: int = 0
    failed: list[str] = field(default_factory=list)
    #: metrics left out because their weights are not on this machine, with the reason (not a failure)
    not_evaluated: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    leaderboard: Path | None = None
    #: the aggregated table behind the page
    table: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.violations


def _metric_info(spec, cache: dict) -> tuple:
    """``(metric id, certifiable, certified threats, random weights)`` of a metric spec, from the process's
    one build of it. Missing weights raise :class:`MissingWeightsError` (every time, from the cache)."""
    import json

    key = (spec.name, json.dumps(spec.options, sort_keys=True, default=str))
    if key not in cache:
        try:
            metric = build_metric(spec.name, spec.options)
            cache[key] = (metric.metric_id(), metric.certifiable, tuple(metric.certified_threats),
                          bool(getattr(metric, "random_weights", False)))
        except MissingWeightsError as err:
            cache[key] = err
    if isinstance(cache[key], MissingWeightsError):
        raise cache[key]
    return cache[key]


def not_evaluated_key(spec) -> str:
    """Key of the store entry saying that the metric ``spec`` could not be evaluated here."""
    return cell_key({"kind": "not-evaluated", "metric": spec.label, "metric_name": spec.name,
                     "metric_options": spec.options})


def _dataset_fingerprint(ds, split: str, cache: dict) -> str:
    import json

    key = (ds.name, json.dumps(ds.options, sort_keys=True, default=str), split, ds.limit)
    if key not in cache:
        cache[key] = build_dataset(ds.name, ds.options, split, ds.limit).fingerprint()
    return cache[key]


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
        if ev.attack:
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
    datasets = [(ds, split, _dataset_fingerprint(ds, split, cache)) for ds in config.datasets for split in ds.splits]
    cells, notes = [], []
    for label, (spec, metric_id, certifiable, threats, random_weights) in metrics.items():
        if random_weights:  # every row of a metric with random weights says so in its label
            label = f"{label} (random weights)"
        for ds, split, fp in datasets:
            base = dict(metric=label, metric_name=spec.name, metric_options=spec.options, metric_id=metric_id,
                        dataset=ds.name, dataset_options=ds.options, split=split, limit=ds.limit, dataset_fp=fp,
                        seed=config.seed, batch_size=config.batch_size)
            for ev in config.evaluations:
                if ev.kind == "natural":
                    cells.append(Cell(kind="natural", budgets=(0.0,), **base))
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


def _train(specs: list, progress: bool) -> dict[str, Path]:
    if not specs:
        return {}
    from jobs.train.runner import run_all

    return run_all(specs, progress=progress)


def _one_line(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err
    text = f"{type(cause).__name__}: {cause}".strip()
    return text.splitlines()[0] if isinstance(cause, SuiteError) else text


def run_cells(cells: list[Cell], store: ResultStore, config: RunConfig, summary: Summary, progress: bool) -> None:
    """Submit unfinished cells as Ray tasks (at most ``max_in_flight`` at once), store each result on arrival."""
    import ray
    from tqdm import tqdm

    remote = ray.remote(num_cpus=config.cpus_per_cell, num_gpus=config.gpus_per_cell, max_retries=0)(run_cell)
    todo = [c for c in cells if not store.is_done(c.key)]
    summary.skipped = len(cells) - len(todo)
    bar = tqdm(total=len(cells), initial=summary.skipped, desc=f"{config.name} cells", unit="cell",
               disable=not progress, file=sys.stderr)
    pending: dict = {}
    queue = list(todo)
    try:
        while queue or pending:
            while queue and len(pending) < config.max_in_flight:
                cell = queue.pop(0)
                pending[remote.remote(cell, device=config.device)] = cell
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                cell = pending.pop(ref)
                key = cell.key
                try:
                    store.write(key, cell.spec(), ray.get(ref))
                    summary.computed += 1
                except Exception as err:  # noqa: BLE001 - a failed cell is recorded, the grid goes on
                    cause = getattr(err, "cause", None) or err
                    if isinstance(cause, MissingWeightsError):  # this worker lacks the weights: not a failure
                        store.write_not_evaluated(key, cell.spec(), str(cause))
                        summary.not_evaluated.append(f"{cell.describe()}: {cause}")
                        bar.update(1)
                        continue
                    message = _one_line(err)
                    store.write_failure(key, cell.spec(), message)
                    summary.failed.append(f"{cell.describe()}: {message}")
                    bar.write(f"cell failed: {cell.describe()}: {message}")
                bar.update(1)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        bar.close()


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
            if not store.is_done(key):
                rows = worst_case_rows([store.read(k) for k in member_keys])
                store.write(key, spec, rows.with_columns(cell=pl.lit(key)))
    if config.check_invariant:
        frames = [store.read(k) for k in sorted(keys) if store.is_done(k)]
        if frames:
            summary.violations = check_invariants(pl.concat(frames, how="vertical_relaxed"))
    summary.table, summary.leaderboard = build(config.results_dir)


def run(config: RunConfig, *, address: str | None = None, progress: bool = True) -> Summary:
    """Run the whole config: training tables, grid cells, worst case, invariants, leaderboard."""
    start = time.perf_counter()
    summary = Summary(results_dir=config.results_dir)
    cache: dict = {}
    missing = validate(config, cache)
    specs = []
    if config.train:
        from jobs.train.spec import parse_train_tables

        specs = parse_train_tables(config.train, config.results_dir)
    config.results_dir.mkdir(parents=True, exist_ok=True)
    store = ResultStore(config.results_dir)
    record_not_evaluated(config, missing, store, summary)
    started = connect(address)
    try:
        trained = _train(specs, progress)
        cells, notes = expand(config, trained, cache)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        summary.total = len(cells)
        run_cells(cells, store, config, summary, progress)
        finish(cells, store, config, summary)
    finally:
        if started:
            import ray

            ray.shutdown()
    summary.seconds = time.perf_counter() - start
    return summary


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
    parser.add_argument("--data-root", help="root folder for datasets that need one (nights, bapps) when the config gives none")
    parser.add_argument("--results", help="results folder (default: the config's [run] results, else results/<name>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="TOML run config, e.g. configs/demo.toml")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_main(args)


def run_main(args) -> int:
    try:
        config = load_config(args.config, data_root=args.data_root, results_dir=args.results)
        summary = run(config, address=args.address, progress=not args.no_progress)
    except SuiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return report(summary)


if __name__ == "__main__":
    sys.exit(main())
