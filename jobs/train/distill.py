"""Distilling a perceptual metric's embedding into LipSim (one Ray Train worker's loop).

The teacher ``T`` is any registered metric with ``embed`` (``metrics.load(teacher,
**teacher_options)``; DreamSim in the paper). Each image ``x`` gives two views, the
plain one and a colour-jittered one ``x̃`` (colour jitter, then greyscale with
probability 0.2), and the loss is ``½·(RMSE(f(x), T(x)) + RMSE(f(x̃), T(x)))``
(:func:`metrics.lipsim.losses.distillation_loss`); ``f`` is the student's raw
embedding (``LipSimNet.forward``).

The student's ``embed_dim`` is set to the teacher's embedding dimension (any
``model_options.embed_dim`` must agree with it, and so must an ``init`` checkpoint).

The teacher runs once per image, ever: its embeddings of the plain views are
cached on disk (:mod:`jobs.train.teacher_cache`) before the first epoch, so later
epochs, resumed runs and reruns with another schedule never run it. Each worker
computes and later trains on its own shards (shard ``k`` belongs to worker
``k mod world``), so no worker holds the whole cache in memory.
"""

from __future__ import annotations

import json
import math
import time

import torch
from torch.utils.data import DataLoader, Dataset

from jobs.train.common import Worker, build_net, epoch_order, restore, setup_process, val_score
from jobs.train.images import ImageSource, image_source
from jobs.train.spec import TrainSpec
from jobs.train.teacher_cache import TeacherCache
from metrics.lipsim.losses import distillation_loss, rmse
from suite.errors import SuiteError

#: colour jitter of the second view (brightness, contrast, saturation, hue) and greyscale probability
JITTER = (0.4, 0.4, 0.4, 0.1)
GREYSCALE_P = 0.2


def jitter_transform():
    from torchvision.transforms import v2

    return v2.Compose([v2.ColorJitter(*JITTER), v2.RandomGrayscale(GREYSCALE_P)])


class Plain(Dataset):
    """The plain view only: what the teacher embeds."""

    def __init__(self, source: ImageSource):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.source.load(index)


class TwoViews(Dataset):
    """Image ``i``: ``(x, x̃, T(x))``, plain view, a fresh colour jitter of it, and its cached teacher embedding."""

    def __init__(self, source: ImageSource, targets: dict[int, torch.Tensor]):
        self.source, self.targets = source, targets
        self.jitter = jitter_transform()

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        x = self.source.load(index)
        return x, self.jitter(x), self.targets[index]


def load_teacher(spec: TrainSpec):
    """The teacher metric, built with the run's seed so that random-weight teachers agree across workers."""
    import metrics

    torch.manual_seed(spec.seed)
    teacher = metrics.load(spec.teacher, **spec.teacher_options)
    if not teacher.has_embed:
        raise SuiteError(f"[[train]] {spec.name!r}: teacher {spec.teacher!r} has no embed; distillation needs a "
                         "metric that is a distance between per-image embeddings")
    return teacher


def teacher_id(spec: TrainSpec, teacher) -> str:
    return json.dumps({"metric": spec.teacher, "options": spec.teacher_options, "weights": teacher.weights_id()},
                      sort_keys=True, default=str)


def fill_cache(spec: TrainSpec, worker: Worker, source: ImageSource) -> tuple[TeacherCache, int]:
    """Open the teacher cache of this run and compute this worker's missing shards.

    Returns the cache and the number of teacher forward calls made here (0 once the
    cache is complete).
    """
    teacher = load_teacher(spec)
    identity = teacher_id(spec, teacher)
    cache = TeacherCache.open(spec.cache_dir, identity, source, spec.shard_size)
    agreed = worker.broadcast_bytes(cache.key.encode() if worker.chief else None).decode()
    if worker.world > 1 and agreed != cache.key:
        raise SuiteError(f"[[train]] {spec.name!r}: the workers built different teachers (cache keys {agreed} and "
                         f"{cache.key}); a teacher with random weights must not depend on the process")
    owned = cache.owned(worker.rank, worker.world)
    missing = [k for k in owned if not cache.has(k)]
    calls = 0
    if missing:
        teacher.to(worker.device).eval()
        done = 0
        todo = sum(len(cache.shard_range(k)) for k in missing)
        worker.say(f"teacher {spec.teacher}: embedding {todo} images ({len(missing)} shards) on worker 0 of "
                   f"{worker.world}, cached under {cache.folder}")
        with torch.no_grad():
            for k in missing:
                rows = []
                loader = DataLoader(Plain(source), batch_size=spec.batch_size, sampler=list(cache.shard_range(k)),
                                    num_workers=spec.loader_workers, pin_memory=spec.use_gpu)
                for x in loader:
                    rows.append(teacher.embed(x.to(worker.device)).float().cpu())
                    calls += 1
                    done += len(rows[-1])
                    worker.progress(0, done, todo, math.nan, phase="teacher")
                cache.write(k, torch.cat(rows))
    del teacher
    if spec.use_gpu and torch.cuda.is_available():
        torch.cuda.empty_cache()
    # rank 0 owns shard 0: its dimension is the run's (a cache folder need not be shared between machines)
    dim = cache.shard_dim(0) if worker.chief else None
    cache.dim = int(worker.broadcast_bytes(str(dim).encode() if worker.chief else None).decode())
    if worker.chief:
        cache.write_meta(teacher=identity, images=source.describe())
    return cache, calls


def steps_per_epoch(cache: TeacherCache, world: int, batch: int) -> int:
    """Steps of one epoch, equal on every worker: the largest worker share, in batches."""
    return max(1, max(math.ceil(cache.owned_count(r, world) / batch) for r in range(world)))


def train_loop(config: dict) -> None:
    """Ray Train entry point: ``config = {"spec": TrainSpec.to_dict()}``."""
    spec = TrainSpec.from_dict(config["spec"])
    setup_process(spec)
    worker = Worker(spec)
    source = image_source(spec)
    cache, teacher_calls = fill_cache(spec, worker, source)
    net = build_net(spec, embed_dim=cache.dim)
    if source.image_size != net.config.input_size:
        raise SuiteError(f"[[train]] {spec.name!r}: images are {source.image_size} px but the student's input size "
                         f"is {net.config.input_size}; set image_size or model_options.input_size")
    val = None
    if spec.dataset and spec.val_split:
        import suite.datasets

        options = {"image_size": net.config.input_size, **spec.dataset_options, **spec.val_options}
        val = suite.datasets.load(spec.dataset, split=spec.val_split, **options)

    owned = [i for k in cache.owned(worker.rank, worker.world) for i in cache.shard_range(k)]
    targets = {i: row for k in cache.owned(worker.rank, worker.world)
               for i, row in zip(cache.shard_range(k), cache.read(k))}
    steps = steps_per_epoch(cache, worker.world, worker.batch)
    model, optimizer, start = restore(net, worker)
    worker.say(f"distilling {spec.teacher} ({cache.dim}-d) into LipSim on {len(source)} images, "
               f"{worker.world} worker(s), {steps} steps per epoch")

    views = TwoViews(source, targets)
    score = None
    for epoch in range(start, spec.epochs):
        began = time.perf_counter()
        local = [owned[i] for i in epoch_order(len(owned), epoch, spec.seed + 7919 * worker.rank).tolist()]
        local = (local * math.ceil(steps * worker.batch / max(len(local), 1)))[: steps * worker.batch]
        loader = DataLoader(views, batch_size=worker.batch, sampler=local, num_workers=spec.loader_workers,
                            pin_memory=spec.use_gpu, persistent_workers=False)
        loss_sum = rmse_sum = 0.0
        for step, (x, xj, t) in enumerate(loader):
            lr = worker.set_lr(optimizer, epoch * steps + step, steps)
            x, xj, t = x.to(worker.device), xj.to(worker.device), t.to(worker.device)
            plain, jittered = model(torch.cat([x, xj])).chunk(2)
            loss = distillation_loss(plain, jittered, t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            rmse_sum += float(rmse(plain.detach(), t))
            worker.progress(epoch, step + 1, steps, loss_sum / (step + 1))
        loss_mean, rmse_mean, calls = worker.all_sum(loss_sum / steps, rmse_sum / steps, teacher_calls)
        teacher_calls = 0
        score = val_score(net, val, worker) if val is not None else None
        worker.progress(epoch + 1, 0, steps, loss_mean / worker.world, force=True)
        worker.end_epoch(epoch + 1, {"model": net.state_dict(), "optimizer": optimizer.state_dict()}, {
            "loss": loss_mean / worker.world, "rmse": rmse_mean / worker.world, "val_score": score,
            "teacher_calls": int(calls), "lr": lr, "seconds": time.perf_counter() - began,
            "start_epoch": start, "workers": worker.world,
        })
    worker.finish(net.cpu().eval(), {"stage": "distill", "epochs": spec.epochs, "teacher": spec.teacher,
                                     "teacher_dim": cache.dim, "val_score": score})
