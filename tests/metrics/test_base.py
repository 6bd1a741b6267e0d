"""The metric contract: identity, pair distances, the gradient declaration."""

import pytest
import torch

import attacks
import metrics
from metrics.base import EmbeddingMetric, Metric
from suite.errors import SuiteError
from suite.registry import METRICS
from suite.types import MetricContract, Triplets


@METRICS.register("test-scaled-l1")
class ScaledL1(EmbeddingMetric):
    """Scaled mean absolute difference (a test plugin with an option that changes its function)."""

    def __init__(self, scale: float = 1.0, weights: str | None = None):
        super().__init__()
        self.scale = scale

    def embed(self, x):
        return x.flatten(1)

    def compare(self, ex, ey):
        return self.scale * (ex - ey).abs().mean(1)


class Frozen(Metric):
    """A metric without a gradient (it thresholds)."""

    differentiable = False

    def distance(self, x, y):
        return ((x - y).abs() > 0.1).float().mean(dim=(1, 2, 3))


class Detached(Metric):
    """Claims a gradient but detaches its output: the attack must say so, not torch."""

    def distance(self, x, y):
        return (x - y).abs().mean(dim=(1, 2, 3)).detach()


def batch(n=4, size=16):
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(n, 3, size, size, generator=g) for _ in range(3)]
    return Triplets(*imgs, torch.tensor([0.9, 0.2, 0.7, 0.1])[:n], [f"s{i}" for i in range(n)])


def test_an_option_that_changes_the_function_changes_the_metric_id():
    a, b = metrics.load("test-scaled-l1", scale=32.0), metrics.load("test-scaled-l1", scale=16.0)
    assert a.weights_id() == b.weights_id()  # no parameters: the weights alone cannot tell them apart
    assert a.metric_id() != b.metric_id()
    assert metrics.load("test-scaled-l1", scale=32.0).metric_id() == a.metric_id()


def test_the_weights_path_is_not_part_of_the_id_but_the_weights_are():
    a = metrics.load("test-scaled-l1", weights="/one/place")
    b = metrics.load("test-scaled-l1", weights="/another/place")
    assert a.metric_id() == b.metric_id()
    tiny0, tiny1 = metrics.load("lipsim", preset="tiny", seed=0), metrics.load("lipsim", preset="tiny", seed=1)
    assert tiny0.metric_id() != tiny1.metric_id()


def test_pair_distances_equal_two_distance_calls_for_both_kinds_of_metric():
    b = batch()
    for metric in (metrics.load("l2"), metrics.load("ssim"), metrics.load("lipsim", preset="tiny")):
        assert isinstance(metric, MetricContract)
        d0, d1 = metric.pair_distances(b.ref, b.x0, b.x1)
        torch.testing.assert_close(d0, metric.distance(b.ref, b.x0))
        torch.testing.assert_close(d1, metric.distance(b.ref, b.x1))
        r0, r1 = metric.represent(b.x0), metric.represent(b.x1)
        torch.testing.assert_close(metric.distances_to(b.ref, r0, r1), (d0, d1))


@pytest.mark.parametrize("name", ["pgd", "mia", "autoattack"])
def test_a_gradient_attack_refuses_a_metric_without_gradient_and_names_the_way_out(name):
    with pytest.raises(SuiteError, match="has no gradient.*differentiable = False.*square"):
        attacks.load(name, eps=0.1).perturb(Frozen(), batch())


def test_a_metric_whose_output_is_detached_gets_a_clear_message_not_torchs():
    with pytest.raises(SuiteError, match="without a gradient.*square"):
        attacks.load("pgd", eps=0.1, steps=2).perturb(Detached(), batch())
    with pytest.raises(SuiteError, match="without a gradient"):
        attacks.load_distance("distance", eps=0.1, steps=2).maximise(Detached(), batch().ref)


def test_square_alone_runs_on_a_metric_without_gradient():
    b = batch()
    adv = attacks.load("autoattack", norm="linf", eps=0.05, attacks=["square"], n_queries=5).perturb(Frozen(), b)
    assert adv.ref.shape == b.ref.shape
