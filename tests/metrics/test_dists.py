"""DISTS against the ``DISTS_pytorch`` package, offline: one random VGG16 copied into both."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import attacks
import metrics
import metrics.dists  # registers dists
from metrics.weights import package_path
from suite.errors import MissingWeightsError, SuiteError
from suite.types import Triplets

# tiny tensors on a shared 2-core machine: one thread avoids OpenMP spinning (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")

VGG = "vgg16-397923af.pth"


def tv_vgg16_features() -> torch.nn.Sequential:
    """torchvision's VGG16 ``features`` (the classifier stays on the meta device, never allocated)."""
    import torchvision.models

    with torch.device("meta"):
        model = torchvision.models.vgg16(weights=None)
    return model.features.to_empty(device="cpu")


@pytest.fixture(scope="module")
def vgg_state():
    """A torchvision-layout VGG16 state dict: He-scaled random weights, non-zero biases."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, value in tv_vgg16_features().state_dict().items():
        if key.endswith("weight"):
            state["features." + key] = torch.randn(value.shape, generator=g) * (2 / value[0].numel()) ** 0.5
        else:
            state["features." + key] = 0.05 * torch.randn(value.shape, generator=g)
    state["classifier.0.bias"] = torch.randn(8, generator=g)  # real files carry the classifier too
    return state


@pytest.fixture(scope="module")
def stored(tmp_path_factory, vgg_state):
    root = tmp_path_factory.mktemp("weights")
    (root / "dists-vgg16").mkdir()
    torch.save(vgg_state, root / "dists-vgg16" / VGG)
    return root


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LIPSIM_SUITE_WEIGHTS", str(tmp_path / "suite"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


@pytest.fixture
def home(stored, monkeypatch, tmp_path):
    monkeypatch.setenv("LIPSIM_SUITE_WEIGHTS", str(stored))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return stored


def shipped_alpha_beta() -> dict[str, torch.Tensor]:
    return torch.load(package_path("DISTS_pytorch:weights.pt"), weights_only=True, map_location="cpu")


def reference(monkeypatch, vgg_state):
    """``DISTS_pytorch.DISTS()`` with ``vgg_state`` as its VGG16 and the package's α/β.

    Its ``models.vgg16(pretrained=True)`` would download ImageNet weights: the
    constructor is replaced by one that returns our random tensors. Its own α/β reader
    looks in ``sys.prefix``; the test copies them from the package's file instead.
    """
    import DISTS_pytorch.DISTS_pt as dp

    def vgg16(pretrained=False, **_):
        features = tv_vgg16_features()
        features.load_state_dict({k[len("features."):]: v for k, v in vgg_state.items() if k.startswith("features.")})
        return SimpleNamespace(features=features)

    monkeypatch.setattr(dp, "models", SimpleNamespace(vgg16=vgg16))
    model = dp.DISTS(load_weights=False)
    weights = shipped_alpha_beta()
    model.alpha.data, model.beta.data = weights["alpha"], weights["beta"]
    return model.eval()


def images(n=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x, y


@pytest.mark.parametrize("size", [224, 64])
def test_dists_equals_the_dists_pytorch_package(home, vgg_state, monkeypatch, size):
    ours = metrics.load("dists")
    theirs = reference(monkeypatch, vgg_state)
    x, y = images(n=1 if size == 224 else 3, size=size)
    with torch.no_grad():
        expected = theirs(x, y).reshape(-1)
        torch.testing.assert_close(ours.distance(x, y), expected, rtol=1e-5, atol=1e-7)
        if size < 224:  # the represent path once, on small images
            torch.testing.assert_close(ours.distance_to(x, ours.represent(y)), expected, rtol=1e-5, atol=1e-7)
    assert ours.random_weights is False


def test_alpha_beta_are_the_ones_shipped_in_dists_pytorch(empty_home):
    metric = metrics.load("dists", pretrained=False)
    shipped = shipped_alpha_beta()
    assert metric.random_weights is True
    assert torch.equal(metric.alpha, shipped["alpha"]) and torch.equal(metric.beta, shipped["beta"])
    x, _ = images(n=2, size=32)
    assert metric.distance(x, x).abs().max() < 1e-5


def test_pair_distances_are_two_distance_calls_and_the_reference_runs_once(empty_home, monkeypatch):
    metric = metrics.load("dists", pretrained=False)
    ref, x0 = images(n=3, size=32, seed=1)
    _, x1 = images(n=3, size=32, seed=2)
    d0, d1 = metric.pair_distances(ref, x0, x1)
    torch.testing.assert_close(d0, metric.distance(ref, x0))
    torch.testing.assert_close(d1, metric.distance(ref, x1))
    r0, r1 = metric.represent(x0), metric.represent(x1)
    index = torch.tensor([1, 2])
    e0, e1 = metric.distances_to(ref[index], r0[index], r1[index])
    torch.testing.assert_close(e0, d0[index])
    torch.testing.assert_close(e1, d1[index])
    calls = []
    features = metric.features
    monkeypatch.setattr(metric, "features", lambda x: calls.append(x) or features(x))
    metric.distances_to(ref, r0, r1)
    assert len(calls) == 1


def test_weights_are_looked_up_and_missing_or_bad_files_are_clear(empty_home, vgg_state, stored):
    with pytest.raises(MissingWeightsError) as info:
        metrics.load("dists")
    message = str(info.value)
    assert VGG in message and "lipsim weights fetch dists-vgg16" in message
    assert str(empty_home / "suite" / "dists-vgg16" / VGG) in message
    assert str(empty_home / "torch" / "hub" / "checkpoints" / VGG) in message

    explicit = metrics.load("dists", weights=str(stored / "dists-vgg16" / VGG))
    hub = empty_home / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / VGG).symlink_to(stored / "dists-vgg16" / VGG)
    assert metrics.load("dists").metric_id() == explicit.metric_id()

    bad = empty_home / "bad.pth"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(SuiteError) as info:
        metrics.load("dists", weights=str(bad))
    assert str(bad) in str(info.value) and "\n" not in str(info.value)

    folder = empty_home / "suite" / "dists-vgg16"
    folder.mkdir(parents=True)
    torch.save({"alpha": shipped_alpha_beta()["alpha"]}, folder / "weights.pt")  # the suite folder comes first
    with pytest.raises(SuiteError, match="exactly 'alpha' and 'beta'"):
        metrics.load("dists", pretrained=False)


def test_a_pgd_step_runs_and_gradients_flow(empty_home):
    metric = metrics.load("dists", pretrained=False)
    g = torch.Generator().manual_seed(5)
    ref, x0, x1 = (torch.rand(2, 3, 32, 32, generator=g) for _ in range(3))
    ref_grad = ref.clone().requires_grad_()
    d0, d1 = metric.distances_to(ref_grad, metric.represent(x0), metric.represent(x1))
    (d1 - d0).sum().backward()
    assert torch.isfinite(ref_grad.grad).all() and ref_grad.grad.abs().sum() > 0
    batch = Triplets(ref, x0, x1, torch.tensor([0.9, 0.1]), ["a", "b"])
    for threat in ("ref", "all"):
        adv = attacks.load("pgd", norm="linf", eps=0.03, steps=1, threat=threat).perturb(metric, batch)
        assert adv.ref.shape == ref.shape and (adv.ref - ref).abs().max() <= 0.03 + 1e-6
