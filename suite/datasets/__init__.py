"""Datasets, of two tasks (``dataset.task``, one of :data:`suite.types.TASKS`).

- 2AFC triplets (:class:`TwoAFCDataset`): ``synthetic-2afc`` (embedded default), ``nights``, ``bapps``;
- retrieval / copy detection (:class:`RetrievalDataset`: a gallery and queries with their
  true originals): ``synthetic-copies`` (embedded), ``copydays``, ``image-pairs``.
"""

from __future__ import annotations

from suite import validate
from suite.datasets.base import Subset, TwoAFCDataset
from suite.datasets.retrieval import RetrievalDataset
from suite.errors import SuiteError
from suite.registry import DATASETS

# built-ins register themselves on import
from suite.datasets import bapps, nights, retrieval, synthetic  # noqa: E402,F401


def load(name: str, *, limit: int | None = None, **options) -> TwoAFCDataset | RetrievalDataset:
    """Build the registered dataset ``name`` (options: ``root``, ``split``, ``image_size``, ...).

    ``limit`` keeps the first ``limit`` triplets (2AFC) or queries (retrieval, with the whole gallery).
    """
    dataset = DATASETS.build(name, (TwoAFCDataset, RetrievalDataset), **options)
    if len(dataset) == 0:
        raise SuiteError(f"dataset {name!r} split {dataset.split!r} is empty")
    if limit is not None:
        limit = validate.integer(limit, f"dataset {name!r}: limit", 1)
        dataset = Subset(dataset, limit) if isinstance(dataset, TwoAFCDataset) else dataset.limited(limit)
    return dataset


__all__ = ["TwoAFCDataset", "RetrievalDataset", "Subset", "load"]
