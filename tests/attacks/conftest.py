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
