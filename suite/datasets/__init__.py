"""2AFC datasets: ``synthetic-2afc`` (embedded default), ``nights``, ``bapps``."""

from __future__ import annotations

from suite import validate
from suite.datasets.base import Subset, TwoAFCDataset
from suite.errors import SuiteError
from suite.registry import DATASETS

# built-ins register themselves on import
from suite.datasets import bapps, nights, synthetic  # noqa: E402,F401


def load(name: str, *, limit: int | None = None, **options) -> TwoAFCDataset:
    """Build the registered dataset ``name`` (options: ``root``, ``split``, ``image_size``, ...).

    ``limit`` keeps the first ``limit`` triplets.
    """
    dataset = DATASETS.build(name, TwoAFCDataset, **options)
    if len(dataset) == 0:
        raise SuiteError(f"dataset {name!r} split {dataset.split!r} is empty")
    if limit is not None:
        limit = validate.integer(limit, f"dataset {name!r}: limit", 1)
        dataset = Subset(dataset, limit)
    return dataset


__all__ = ["TwoAFCDataset", "Subset", "load"]
