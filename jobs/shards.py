"""Sample shards: a cell of many samples computed as contiguous index ranges, then merged.

A shard is the unit of retry and of resume (``jobs/workers.py`` runs shards,
``suite/store.py`` keeps finished ones on disk). Shard boundaries are multiples of the
cell's ``batch_size``, so a shard's batches are exactly the batches an unsharded run
evaluates: the same samples in the same batches, hence the same per-sample values
(attacks draw their randomness per sample, from the sample id), and the rows of the
shards concatenated in start order are the rows of the unsharded cell in the same order.
No Ray here: everything is plain PyTorch and testable alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from suite.cell import Cell
from suite.datasets.base import TwoAFCDataset
from suite.errors import SuiteError

@dataclass(frozen=True)
class Shard:
    """Samples ``[start, stop)`` of ``cell``'s dataset split."""

    cell: Cell
    start: int
    stop: int

    @property
    def span(self) -> tuple[int, int]:
        return self.start, self.stop

    def describe(self) -> str:
        return f"{self.cell.describe()} samples {self.start}–{self.stop}"


def spans(size: int, shard_size: int, batch_size: int) -> list[tuple[int, int]]:
    """The ``(start, stop)`` ranges that cover ``size`` samples: ``shard_size`` rounded down to a multiple
    of ``batch_size`` (at least one batch) each, the last one shorter. A cell of no samples is one
    empty shard, so that it still yields its (empty) result."""
    step = max(batch_size, shard_size // batch_size * batch_size)
    return [(start, min(start + step, size)) for start in range(0, size, step)] or [(0, 0)]


class SampleRange(TwoAFCDataset):
    """Samples ``[start, stop)`` of another dataset, as a dataset (what :func:`suite.evaluate.evaluate` takes)."""

    def __init__(self, base: TwoAFCDataset, start: int, stop: int):
        if not 0 <= start <= stop <= len(base):
            raise SuiteError(f"shard [{start}, {stop}) is outside the dataset's {len(base)} samples")
        self.base, self.start, self.stop = base, start, stop
        self.name, self.split, self.image_size = base.name, base.split, base.image_size

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.base[self.start + index]

    def sample_id(self, index: int) -> str:
        return self.base.sample_id(self.start + index)

    def fingerprint(self) -> str:  # a shard is part of its cell, whose key holds the whole split's fingerprint
        raise SuiteError("a shard of a dataset has no fingerprint of its own; use the dataset's")


def merge(parts: dict[tuple[int, int], pl.DataFrame], expected: list[tuple[int, int]]) -> pl.DataFrame:
    """The rows of a cell from the rows of its shards, in start order (the order of an unsharded run).

    Only the ``expected`` spans are taken (shards kept from a run with another shard size are
    not), and a missing one is an error: never a cell with missing or duplicated samples.
    """
    missing = sorted(set(expected) - set(parts))
    if missing:
        raise SuiteError(f"cannot merge a cell: shards {missing} are missing")
    return pl.concat([parts[span] for span in sorted(expected)], how="vertical")


__all__ = ["SampleRange", "Shard", "merge", "spans"]
