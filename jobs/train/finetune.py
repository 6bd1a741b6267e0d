"""Fine-tuning LipSim on 2AFC triplets with the hinge loss (one Ray Train worker's loop).

Per step, with ``f`` the student's embedding (``LipSimNet.embed``) and
``d_i = 1 − cos(f(ref), f(x_i))``: ``logit = d0 − d1``, ``y = +1`` if ``j > ½`` else
``−1``, ``loss = mean(max(0, margin − y·logit))`` (:func:`metrics.lipsim.losses.hinge_loss`).
Adam, linear warm-up then cosine (or step) decay of the learning rate, gradients
averaged over the workers by DDP. After every epoch: the natural 2AFC score on the
validation split, the resumable state and a Ray checkpoint (:mod:`jobs.train.common`).
Start from a distilled checkpoint (``init``) or from scratch (``preset``).
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, Dataset

from jobs.train.common import EmbedOf, Worker, build_net, restore, setup_process, shard_order, val_score
from jobs.train.spec import TrainSpec
from metrics.lipsim.losses import hinge_loss, twoafc_logit
from suite.errors import SuiteError


def load_splits(spec: TrainSpec, image_size: int):
    """The training split and the validation split (or None) of ``spec.dataset`` at ``image_size``."""
    import suite.datasets

    options = {"image_size": image_size, **spec.dataset_options}
    if options["image_size"] != image_size:
        raise SuiteError(f"[[train]] {spec.name!r}: dataset image_size {options['image_size']} differs from the "
                         f"model's input size {image_size}; drop dataset_options.image_size or change the model")
    train = suite.datasets.load(spec.dataset, split=spec.split, **options)
    val = None
    if spec.val_split:
        val = suite.datasets.load(spec.dataset, split=spec.val_split, **{**options, **spec.val_options})
    return train, val


class TripletItems(Dataset):
    """A 2AFC dataset as ``(ref, x0, x1, judge)`` items for a ``DataLoader``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        ref, x0, x1, judge, _ = self.dataset[index]
        return ref, x0, x1, torch.tensor(float(judge))


def train_loop(config: dict) -> None:
    """Ray Train entry point: ``config = {"spec": TrainSpec.to_dict()}``."""
    spec = TrainSpec.from_dict(config["spec"])
    setup_process(spec)
    worker = Worker(spec)
    net = build_net(spec)
    train, val = load_splits(spec, net.config.input_size)
    model, optimizer, start = restore(net, worker, wrap=EmbedOf)
    worker.say(f"fine-tuning {len(train)} triplets of {spec.dataset}/{spec.split} on {worker.world} worker(s), "
               f"margin {spec.margin:g}, from {'scratch' if spec.init is None else spec.init}")

    score = None
    for epoch in range(start, spec.epochs):
        began = time.perf_counter()
        order, steps = shard_order(len(train), epoch, spec.seed, worker.rank, worker.world, worker.batch)
        loader = DataLoader(TripletItems(train), batch_size=worker.batch, sampler=order,
                            num_workers=spec.loader_workers, pin_memory=spec.use_gpu)
        loss_sum = 0.0
        for step, (ref, x0, x1, judge) in enumerate(loader):
            lr = worker.set_lr(optimizer, epoch * steps + step, steps)
            images, judge = torch.cat([ref, x0, x1]).to(worker.device), judge.to(worker.device)
            e_ref, e0, e1 = model(images).chunk(3)
            loss = hinge_loss(twoafc_logit(e_ref, e0, e1), judge, spec.margin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            worker.progress(epoch, step + 1, steps, loss_sum / (step + 1))
        loss_mean = worker.all_sum(loss_sum / steps)[0] / worker.world
        score = val_score(net, val, worker) if val is not None else None
        worker.progress(epoch + 1, 0, steps, loss_mean, force=True)
        worker.end_epoch(epoch + 1, {"model": net.state_dict(), "optimizer": optimizer.state_dict()}, {
            "loss": loss_mean, "val_score": score, "lr": lr, "seconds": time.perf_counter() - began,
            "start_epoch": start, "workers": worker.world,
        })
    if score is None and val is not None:
        score = val_score(net, val, worker)
    worker.finish(net.cpu().eval(), {"stage": "finetune", "epochs": spec.epochs, "val_score": score})
