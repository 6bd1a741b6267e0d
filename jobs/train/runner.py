"""Run training specs on Ray Train: one ``TorchTrainer`` per spec, several specs at once.

``run_all(specs)`` needs Ray initialised by its caller (the ``lipsim`` CLI, the
benchmark grid, or a test fixture). Each unfinished spec gets a ``TorchTrainer``
(``num_workers`` data-parallel workers, gloo on CPU, NCCL on GPU) whose ``fit()`` runs
in its own driver thread, so a margin sweep trains its models side by side as far
as the cluster's resources allow. A finished spec (``done.json`` in its output) is
skipped; an interrupted one resumes after its last finished epoch. A spec whose
``init`` names another spec waits for it. If a spec fails, the others still run to
the end, then :class:`~suite.errors.SuiteError` names every failed spec.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from jobs.train.common import DONE_FILE, PROGRESS_FILE, RAY_STORAGE, SPEC_FILE, is_finished, read_log
from suite.atomic import atomic_write_json
from jobs.train.spec import TrainSpec
from suite.errors import SuiteError

#: seconds between two polls of the Ray Train controller (Ray's default: 2)
CONTROLLER_POLL_S = 0.5


def check_recipe(spec: TrainSpec) -> None:
    """Refuse an output folder whose ``spec.json`` holds another recipe (finished or not)."""
    path = spec.output / SPEC_FILE
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
    except ValueError:
        return
    if saved.get("recipe_hash") != spec.recipe_hash():
        old = saved.get("recipe", {})
        changed = sorted(k for k in set(old) | set(spec.recipe()) if old.get(k) != spec.recipe().get(k))
        raise SuiteError(f"[[train]] {spec.name!r}: {str(spec.output)!r} holds a run with another recipe "
                         f"(changed: {', '.join(changed) or '?'}); delete that folder or choose another output")


def write_recipe(spec: TrainSpec) -> None:
    spec.output.mkdir(parents=True, exist_ok=True)
    atomic_write_json(spec.output / SPEC_FILE,
                      {"recipe_hash": spec.recipe_hash(), "recipe": spec.recipe(), "spec": spec.to_dict()})


def make_trainer(spec: TrainSpec):
    """The ``TorchTrainer`` of one spec; its Ray storage is ``<output>/ray/train``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from jobs.train import distill, finetune

    loop = finetune.train_loop if spec.stage == "finetune" else distill.train_loop
    return TorchTrainer(
        loop,
        train_loop_config={"spec": spec.to_dict()},
        torch_config=TorchConfig(backend="nccl" if spec.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=spec.num_workers, use_gpu=spec.use_gpu,
                                     resources_per_worker=_resources(spec)),
        run_config=RunConfig(
            name="train",
            storage_path=str(spec.output / RAY_STORAGE),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=0),
        ),
    )


def _resources(spec: TrainSpec) -> dict:
    return {"CPU": spec.cpus_per_worker, "GPU": 1} if spec.use_gpu else {"CPU": spec.cpus_per_worker}


def train_one(spec: TrainSpec) -> Path:
    """Train ``spec`` to the end (or resume it) on the current Ray cluster; returns its output folder."""
    check_recipe(spec)
    if is_finished(spec.output):
        return spec.output
    write_recipe(spec)
    try:
        make_trainer(spec).fit()
    except Exception as err:  # Ray wraps worker errors; keep the worker's own one-line message
        raise SuiteError(f"[[train]] {spec.name!r} failed: {_root_message(err)}") from err
    if not is_finished(spec.output):
        raise SuiteError(f"[[train]] {spec.name!r}: training ended without writing {spec.output / DONE_FILE}")
    return spec.output


def _root_message(err: BaseException) -> str:
    seen = set()
    while True:
        inner = getattr(err, "cause", None) or err.__cause__
        if isinstance(err, SuiteError) or inner is None or id(inner) in seen:
            break
        seen.add(id(err))
        err = inner
    if isinstance(err, SuiteError):
        return str(err)
    text = f"{type(err).__name__}: {err}".strip()
    errors = getattr(err, "worker_failures", None)
    if isinstance(errors, dict) and errors:
        first = next(iter(errors.values()))
        return _root_message(first)
    return text.splitlines()[0]


def run_all(specs: list[TrainSpec], *, progress: bool = True) -> dict[str, Path]:
    """Train every spec (finished ones are skipped); returns ``{label: trained model folder}``.

    Independent specs run in parallel (one driver thread each); a spec whose ``init``
    is another spec starts once that one is done. Raises :class:`SuiteError` naming
    every failed spec after all the others have finished.
    """
    import ray

    if not ray.is_initialized():
        raise SuiteError("training needs a Ray cluster: call ray.init() first (the lipsim CLI does)")
    # Ray Train's controller takes in one worker report per poll, every 2 s by default: short CPU epochs
    # would queue their reports and end the run seconds late. The driver's value is passed on to the controller.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(CONTROLLER_POLL_S))
    # Ray Train's print patch logs every print of a worker a second time (our progress lines appeared twice)
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    for spec in specs:  # a reused output folder of another recipe stops everything before any training
        check_recipe(spec)
    results: dict[str, Path] = {}
    failures: dict[str, str] = {}
    pending = {s.name: s for s in specs}
    names = set(pending)
    monitor = _Monitor(specs, enabled=progress)
    running: dict[Future, TrainSpec] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(specs)), thread_name_prefix="lipsim-train") as pool:
        monitor.start()
        try:
            while pending or running:
                for name, spec in list(pending.items()):
                    source = spec.init_from if spec.init_from in names else None
                    if source in failures:
                        failures[name] = f"not run: its init {source!r} failed"
                        del pending[name]
                    elif source is None or source in results:
                        running[pool.submit(train_one, spec)] = spec
                        del pending[name]
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    spec = running.pop(future)
                    try:
                        results[spec.name] = future.result()
                    except SuiteError as err:
                        failures[spec.name] = str(err)
                    except Exception as err:  # noqa: BLE001 - reported with the spec's name below
                        failures[spec.name] = f"{type(err).__name__}: {err}"
        finally:
            monitor.stop()
    if failures:
        lines = "; ".join(f"{name}: {message}" for name, message in failures.items())
        raise SuiteError(f"training failed for {', '.join(failures)} ({lines})")
    return results


class _Monitor:
    """Driver-side progress: one tqdm bar per spec, fed by ``progress.json`` and ``metrics.jsonl`` of its output
    folder (the workers write them, so this works whether or not Ray forwards worker logs)."""

    def __init__(self, specs: list[TrainSpec], enabled: bool, every: float = 1.0):
        self.specs, self.enabled, self.every = specs, enabled, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lipsim-train-progress", daemon=True)

    def start(self) -> None:
        if self.enabled:
            self._thread.start()

    def stop(self) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()

    def _run(self) -> None:
        from jobs.progress import bar as progress_bar

        bars, printed = {}, {}
        for position, spec in enumerate(self.specs):
            if is_finished(spec.output):
                continue
            bars[spec.name] = progress_bar(total=spec.epochs, desc=spec.name, unit="epoch", position=position,
                                           dynamic_ncols=True, leave=True,
                                           bar_format="{l_bar}{bar}| {n:.2f}/{total} epochs "
                                                      "[{elapsed}<{remaining}{postfix}]")
            printed[spec.name] = {r.get("epoch") for r in read_log(spec.output)}
        while True:
            stopping = self._stop.wait(self.every)
            for spec in self.specs:
                bar = bars.get(spec.name)
                if bar is None:
                    continue
                for row in read_log(spec.output):
                    if row.get("epoch") not in printed[spec.name]:
                        printed[spec.name].add(row.get("epoch"))
                        bar.write(_epoch_line(spec, row))
                position = _position(spec)
                if position is not None and position != bar.n:
                    bar.n = position
                    bar.refresh()
            if stopping:
                break
        for bar in bars.values():
            bar.close()


def _position(spec: TrainSpec) -> float | None:
    """Epochs done, fractional, from ``progress.json`` (``None`` while it does not exist)."""
    if is_finished(spec.output):
        return float(spec.epochs)
    try:
        p = json.loads((spec.output / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if p.get("phase") != "train":
        return 0.0
    return min(spec.epochs, p["epoch"] + p["step"] / max(1, p["steps"]))


def _epoch_line(spec: TrainSpec, row: dict) -> str:
    parts = [f"[{spec.name}] epoch {row.get('epoch')}/{spec.epochs}", f"loss {row.get('loss', float('nan')):.4f}"]
    if row.get("rmse") is not None:
        parts.append(f"rmse {row['rmse']:.4f}")
    if row.get("val_score") is not None:
        parts.append(f"val 2AFC {100 * row['val_score']:.2f}%")
    if row.get("seconds") is not None:
        parts.append(f"{row['seconds']:.1f} s")
    return " | ".join(parts)

