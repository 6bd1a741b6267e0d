"""Fixtures of the attack tests (helpers live in ``attack_helpers``)."""

from __future__ import annotations

import pytest

import metrics
from attack_helpers import ConvEmbedding, make_triplets


@pytest.fixture
def triplets():
    return make_triplets


@pytest.fixture
def l2():
    return metrics.load("l2")


@pytest.fixture
def conv_metric():
    return ConvEmbedding().eval()


@pytest.fixture(autouse=True)
def _one_torch_thread(one_thread):
    """Every attack here runs on tiny tensors (8–32 px images, small nets): one thread, as the metric tests do."""
