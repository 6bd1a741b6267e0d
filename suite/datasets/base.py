"""The dataset contract: an indexable collection of 2AFC triplets.

``suite.datasets.load(name, root=..., split=..., image_size=..., limit=..., **options)``
returns a :class:`TwoAFCDataset`. Item ``i`` is ``(ref, x0, x1, judge, sample_id)``
with images ``(3, H, W)`` float in ``[0, 1]`` at the run's ``image_size``, ``judge`` the
fraction of people who judged ``x1`` closer, and ``sample_id`` a stable string.
"""

from __future__ import annotations

import hashlib
from typing import Iterator

import torch

from suite.datasets.images import load_image
from suite.types import Triplets


class TwoAFCDataset:
    """Base class of every 2AFC dataset."""

    #: registry name, set by :func:`suite.datasets.load`
    name: str = ""
    split: str = ""
    image_size: int = 0
    #: the task it poses (one of :data:`suite.types.TASKS`)
    task: str = "2afc"

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, str]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Identifies the exact samples (part of each cell key). Default: hash of the sample ids and size."""
        h = hashlib.sha256(f"{type(self).__qualname__}|{self.split}|{self.image_size}|{len(self)}".encode())
        for i in range(len(self)):
            h.update(self.sample_id(i).encode())
        return h.hexdigest()[:16]

    def sample_id(self, index: int) -> str:
        return self[index][4]

    def batches(self, batch_size: int) -> Iterator[Triplets]:
        """Consecutive batches of :class:`Triplets`, in index order."""
        for start in range(0, len(self), batch_size):
            items = [self[i] for i in range(start, min(start + batch_size, len(self)))]
            yield Triplets(
                ref=torch.stack([it[0] for it in items]),
                x0=torch.stack([it[1] for it in items]),
                x1=torch.stack([it[2] for it in items]),
                judge=torch.tensor([float(it[3]) for it in items], dtype=torch.float32),
                sample_id=[it[4] for it in items],
            )


class FileTriplets(TwoAFCDataset):
    """Triplets stored as image files: subclasses fill ``ids``, ``paths`` (ref, x0, x1) and ``judges``;
    images are read and resized to ``image_size`` only when an item is asked for."""

    ids: list[str]
    paths: list[tuple]
    judges: list[float]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self.ids):
            raise IndexError(index)
        ref, x0, x1 = (load_image(p, self.image_size) for p in self.paths[index])
        return ref, x0, x1, self.judges[index], self.sample_id(index)

    def sample_id(self, index: int) -> str:
        return self.ids[index]


class Subset(TwoAFCDataset):
    """The first ``limit`` triplets of another dataset."""

    def __init__(self, base: TwoAFCDataset, limit: int):
        self.base, self.limit = base, min(limit, len(base))
        self.name, self.split, self.image_size = base.name, base.split, base.image_size

    def __len__(self) -> int:
        return self.limit

    def __getitem__(self, index: int):
        if not 0 <= index < self.limit:
            raise IndexError(index)
        return self.base[index]

    def sample_id(self, index: int) -> str:
        return self.base.sample_id(index)

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{self.base.fingerprint()}|limit={self.limit}".encode())
        return h.hexdigest()[:16]
