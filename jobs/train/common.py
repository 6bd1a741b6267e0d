"""What both training stages share inside a Ray Train worker: files of the output folder, resumption,
epoch reports, distributed reductions and the 2AFC validation score.

Layout of a training output folder (``spec.output``)::

    spec.json           the recipe (written by the driver before the first launch)
    metrics.jsonl       one JSON line per finished epoch
    progress.json       the current step (read by the driver for its progress bar)
    last.pt             resumable state after the last finished epoch (deleted once done)
    ray/                Ray Train storage: the same state, reported as Ray checkpoints
    config.json, model.safetensors   the final model (``metrics.load("lipsim", weights=OUTPUT)``)
    done.json           written last: the run is finished (a rerun is a no-op)

The output folder must be visible to every worker (a local disk for one machine,
shared storage for a cluster), as Ray's own ``storage_path`` must be.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from jobs.train.spec import TrainSpec
from metrics.lipsim.losses import lr_factor
from suite.atomic import atomic_write, atomic_write_json
from suite.errors import SuiteError
from suite.scoring import twoafc_score

STATE_FILE = "last.pt"
LOG_FILE = "metrics.jsonl"
PROGRESS_FILE = "progress.json"
SPEC_FILE = "spec.json"
DONE_FILE = "done.json"
RAY_STORAGE = "ray"
#: seconds between two progress.json updates (and between in-epoch log lines of long epochs)
PROGRESS_EVERY = 2.0
LOG_EVERY = 60.0


# ---------------------------------------------------------------- files


def is_finished(output: Path) -> bool:
    """True once the final model and ``done.json`` are in ``output`` (``done.json`` is written last)."""
    done = Path(output) / DONE_FILE
    if not done.is_file():
        return False
    try:
        files = json.loads(done.read_text())["files"]
    except (OSError, ValueError, KeyError):
        return False
    return all((Path(output) / name).is_file() for name in files)


def read_log(output: Path) -> list[dict]:
    """The epoch lines of ``metrics.jsonl`` (a torn last line, from a kill mid-write, is ignored)."""
    path = Path(output) / LOG_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


# ---------------------------------------------------------------- the worker's view


class Worker:
    """Rank, world size, device and the output folder of one training worker."""

    def __init__(self, spec: TrainSpec):
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.spec = spec
        self.rank = context.get_world_rank()
        self.world = context.get_world_size()
        self.device = ray.train.torch.get_device() if spec.use_gpu else torch.device("cpu")
        self.output = Path(spec.output)
        self.batch = spec.batch_size // self.world
        self._last_progress = 0.0
        self._last_line = time.monotonic()
        torch.manual_seed(spec.seed)

    @property
    def chief(self) -> bool:
        return self.rank == 0

    def say(self, text: str) -> None:
        if self.chief:
            print(f"[{self.spec.name}] {text}", flush=True)

    # ------------------------------------------------------------ collectives

    def _distributed(self) -> bool:
        return self.world > 1 and dist.is_available() and dist.is_initialized()

    def all_sum(self, *values: float) -> list[float]:
        """Sum of each value over all workers."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self._distributed():
            dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self._distributed():
            dist.barrier()

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """Rank 0's ``data`` on every worker (raw bytes: each worker then parses them itself)."""
        if not self._distributed():
            return data or b""
        size = torch.tensor([len(data) if self.chief and data else 0], dtype=torch.int64, device=self.device)
        dist.broadcast(size, 0)
        buffer = torch.zeros(int(size.item()), dtype=torch.uint8, device=self.device)
        if self.chief and data:
            buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        if buffer.numel():
            dist.broadcast(buffer, 0)
        return bytes(buffer.cpu().numpy())

    # ------------------------------------------------------------ resumption

    def load_state(self) -> dict | None:
        """The state of the last finished epoch: ``last.pt`` in the output folder, else the latest Ray
        checkpoint of this run. Rank 0 reads it and every worker gets the same bytes."""
        import ray.train

        data = None
        if self.chief:
            path = self.output / STATE_FILE
            if path.is_file():
                data = path.read_bytes()
            else:
                checkpoint = ray.train.get_checkpoint()
                if checkpoint is not None:
                    with checkpoint.as_directory() as folder:
                        candidate = Path(folder) / STATE_FILE
                        if candidate.is_file():
                            data = candidate.read_bytes()
        data = self.broadcast_bytes(data)
        if not data:
            return None
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if state.get("recipe") != self.spec.recipe_hash():
            raise SuiteError(f"{self.output / STATE_FILE}: saved by another recipe; delete the output folder "
                             f"or choose another output")
        return state

    def start(self, state: dict | None) -> int:
        """First epoch index (0-based) of this session; trims log lines of epochs that did not finish."""
        start = int(state["epoch"]) if state else 0
        if self.chief:
            rows = [r for r in read_log(self.output) if r.get("epoch", 0) <= start]
            body = "".join(json.dumps(r) + "\n" for r in rows)
            atomic_write(self.output / LOG_FILE, body.encode())
            if start:
                self.say(f"resuming after epoch {start}/{self.spec.epochs}")
        return start

    def end_epoch(self, epoch: int, state: dict, row: dict) -> None:
        """Save the resumable state (rank 0, atomically), append the log line, report to Ray Train."""
        import ray.train
        from ray.train import Checkpoint

        state = {**state, "epoch": epoch, "recipe": self.spec.recipe_hash()}
        row = {"epoch": epoch, **row}
        if not self.chief:
            ray.train.report(row)
            return
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write(self.output / STATE_FILE, buffer.getvalue())
        with open(self.output / LOG_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")
        parts = [f"epoch {epoch}/{self.spec.epochs}", f"loss {row['loss']:.4f}"]
        if row.get("val_score") is not None:
            parts.append(f"val 2AFC {100 * row['val_score']:.2f}%")
        parts.append(f"{row['seconds']:.1f} s")
        self.say(" | ".join(parts))
        with tempfile.TemporaryDirectory(prefix="lipsim-ckpt-") as folder:
            try:
                os.link(self.output / STATE_FILE, Path(folder) / STATE_FILE)
            except OSError:  # another file system: copy instead
                shutil.copy2(self.output / STATE_FILE, Path(folder) / STATE_FILE)
            ray.train.report(row, checkpoint=Checkpoint.from_directory(folder))

    def finish(self, net: torch.nn.Module, summary: dict) -> None:
        """Write the final model into the output folder (rank 0): files first, ``done.json`` last."""
        from metrics.lipsim import checkpoint

        if self.chief:
            staging = Path(tempfile.mkdtemp(prefix=".final-", dir=self.output))
            try:
                checkpoint.save(net, staging)
                names = sorted(p.name for p in staging.iterdir())
                for name in names:
                    os.replace(staging / name, self.output / name)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            atomic_write_json(self.output / DONE_FILE, {"name": self.spec.name, "files": names,
                                                        "recipe": self.spec.recipe_hash(), **summary})
            (self.output / STATE_FILE).unlink(missing_ok=True)
            (self.output / PROGRESS_FILE).unlink(missing_ok=True)
            self.say(f"done: {self.output}")
        self.barrier()

    # ------------------------------------------------------------ progress

    def progress(self, epoch: int, step: int, steps: int, loss: float, phase: str = "train", force: bool = False) -> None:
        """Rank 0 updates ``progress.json`` every few seconds (the driver draws its bar from it) and prints a
        line every minute of a long epoch."""
        if not self.chief:
            return
        now = time.monotonic()
        if force or now - self._last_progress >= PROGRESS_EVERY:
            self._last_progress = now
            atomic_write_json(self.output / PROGRESS_FILE, {
                "phase": phase, "epoch": epoch, "epochs": self.spec.epochs, "step": step, "steps": steps,
                "loss": loss if math.isfinite(loss) else None})
        if now - self._last_line >= LOG_EVERY:
            self._last_line = now
            self.say(f"{phase} epoch {epoch + 1}/{self.spec.epochs} step {step}/{steps} loss {loss:.4f}")

    def set_lr(self, optimizer: torch.optim.Optimizer, step: int, steps_per_epoch: int) -> float:
        """Learning rate of global step ``step``: ``spec.lr · lr_factor(...)`` (warm-up, then decay)."""
        lr = self.spec.lr * lr_factor(
            step, self.spec.epochs * steps_per_epoch, round(self.spec.warmup_epochs * steps_per_epoch), self.spec.decay
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr


def prepare(module: torch.nn.Module, worker: Worker) -> torch.nn.Module:
    """Move to the worker's device and wrap in DistributedDataParallel when there are several workers."""
    import ray.train.torch

    return ray.train.torch.prepare_model(module, move_to_device=worker.device)


def restore(net: torch.nn.Module, worker: Worker, wrap=None) -> tuple[torch.nn.Module, torch.optim.Optimizer, int]:
    """Load the last saved state (if any) into ``net`` and its Adam optimiser.

    Returns the model prepared for data-parallel training (``wrap(net)`` when given),
    the optimiser, and the first epoch still to run.
    """
    state = worker.load_state()
    if state:
        net.load_state_dict(state["model"])
    net.to(worker.device).train()
    model = prepare(net if wrap is None else wrap(net), worker)
    optimizer = torch.optim.Adam(net.parameters(), lr=worker.spec.lr, betas=worker.spec.betas)
    if state:
        optimizer.load_state_dict(state["optimizer"])
    return model, optimizer, worker.start(state)


def epoch_order(n: int, epoch: int, seed: int) -> torch.Tensor:
    """A permutation of ``range(n)`` that depends only on ``(seed, epoch)``: the same on every worker and after
    a resumption."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator)


def shard_order(n: int, epoch: int, seed: int, rank: int, world: int, batch: int) -> tuple[list[int], int]:
    """Rank ``rank``'s indices of one epoch and the number of steps, equal on every rank.

    The epoch's permutation is padded by wrapping around to ``steps · world · batch``
    items (``steps = ⌈n / (world · batch)⌉``) and dealt out ``rank::world``, as
    ``DistributedSampler`` does, so every rank runs the same number of steps.
    """
    steps = max(1, math.ceil(n / (world * batch)))
    order = epoch_order(n, epoch, seed).tolist()
    total = steps * world * batch
    order = (order * math.ceil(total / n))[:total]
    return order[rank::world], steps


class EmbedOf(torch.nn.Module):
    """``forward = net.embed``: the embedding the lipsim metric compares, routed through DDP's forward."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.embed(x)


@torch.no_grad()
def val_score(net: torch.nn.Module, dataset, worker: Worker) -> float:
    """Mean natural 2AFC score of the ``lipsim`` metric around ``net`` on ``dataset``, each worker scoring
    the triplets ``rank::world``; distances come from the metric's ``pair_distances``, as in the grid."""
    from metrics.lipsim.metric import LipSimMetric

    metric = LipSimMetric.from_net(net)
    was_training = net.training
    net.eval()
    total = count = 0.0
    indices = list(range(worker.rank, len(dataset), worker.world))
    for start in range(0, len(indices), max(worker.batch, 1)):
        items = [dataset[i] for i in indices[start:start + worker.batch]]
        ref, x0, x1 = (torch.stack([it[k] for it in items]).to(worker.device) for k in range(3))
        judge = torch.tensor([float(it[3]) for it in items])
        d0, d1 = (d.cpu() for d in metric.pair_distances(ref, x0, x1))
        total += float(twoafc_score(d0, d1, judge).sum())
        count += len(items)
    net.train(was_training)
    total, count = worker.all_sum(total, count)
    return total / max(count, 1.0)


def build_net(spec: TrainSpec, **overrides) -> torch.nn.Module:
    """The student: ``spec.init`` when given (a checkpoint folder or file), else the preset with
    ``model_options`` and ``overrides``."""
    from metrics.lipsim import checkpoint
    from metrics.lipsim.model import LipSimNet
    from metrics.lipsim.presets import preset

    if spec.init is not None:
        net = checkpoint.load(spec.init)
        for key, value in overrides.items():
            if getattr(net.config, key) != value:
                raise SuiteError(f"[[train]] {spec.name!r}: init {str(spec.init)!r} has {key} = "
                                 f"{getattr(net.config, key)}, this stage needs {value}")
        return net
    options = {**spec.model_options}
    for key, value in overrides.items():
        if key in options and options[key] != value:
            raise SuiteError(f"[[train]] {spec.name!r}: model_options.{key} = {options[key]} but this stage needs "
                             f"{value}; drop it from model_options")
        options[key] = value
    return LipSimNet(preset(spec.preset, **options))


def setup_process(spec: TrainSpec) -> None:
    """Point the worker at the driver's suite cache and, on CPU, use as many threads as Ray reserved cores.

    Ray starts workers with the cluster's environment, not the driver's, so the cache
    folder (datasets, teacher embeddings) travels in the spec.
    """
    if spec.cache_dir is not None:
        os.environ["LIPSIM_SUITE_CACHE"] = str(spec.cache_dir)
    if not spec.use_gpu:
        torch.set_num_threads(max(1, spec.cpus_per_worker))
