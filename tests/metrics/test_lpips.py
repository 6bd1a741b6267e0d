"""LPIPS and R-LPIPS against the ``lpips`` package, offline: random backbone tensors copied into both."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import attacks
import metrics
import metrics.lpips  # registers lpips and r-lpips
from metrics.weights import package_path
from suite.errors import MissingWeightsError, SuiteError
from suite.types import Triplets

# tiny tensors on a shared 2-core machine: one thread avoids OpenMP spinning (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")

ARCH = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}
FILE = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth", "squeeze": "squeezenet1_1-b8a52dc0.pth"}


def tv_features(arch: str) -> torch.nn.Sequential:
    """torchvision's ``features`` of ``arch`` (the classifier stays on the meta device, never allocated)."""
    import torchvision.models

    with torch.device("meta"):
        model = getattr(torchvision.models, arch)(weights=None)
    return model.features.to_empty(device="cpu")


def random_state(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """A torchvision-layout state dict with random He-scaled weights and non-zero biases."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in tv_features(arch).state_dict().items():
        if key.endswith("weight"):
            state["features." + key] = torch.randn(value.shape, generator=g) * (2 / value[0].numel()) ** 0.5
        else:
            state["features." + key] = 0.05 * torch.randn(value.shape, generator=g)
    state["classifier.1.weight"] = torch.randn(8, 8, generator=g)  # real files carry the classifier too
    return state


@pytest.fixture(scope="module")
def states():
    return {net: random_state(arch, seed) for seed, (net, arch) in enumerate(ARCH.items())}


@pytest.fixture(scope="module")
def stored(tmp_path_factory, states):
    """A suite weights folder holding the three random backbones as torchvision files."""
    root = tmp_path_factory.mktemp("weights")
    for net, state in states.items():
        (root / f"lpips-{net}").mkdir()
        torch.save(state, root / f"lpips-{net}" / FILE[net])
    return root


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    """Empty suite folder and torch hub: nothing to find but the packaged heads."""
    monkeypatch.setenv("LIPSIM_SUITE_WEIGHTS", str(tmp_path / "suite"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


@pytest.fixture
def home(stored, monkeypatch, tmp_path):
    monkeypatch.setenv("LIPSIM_SUITE_WEIGHTS", str(stored))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return stored


def reference(monkeypatch, states, net: str = "alex"):
    """``lpips.LPIPS(pretrained=True, pnet_rand=True)`` whose torchvision trunk holds ``states[net]``.

    ``pnet_rand=True`` already keeps the reference from downloading; its torchvision
    constructors are replaced so the trunk gets our random tensors (and no classifier is built).
    """
    import lpips
    import lpips.pretrained_networks as pn

    def constructor(arch: str, state: dict):
        def build(pretrained=False, **_):
            assert not pretrained
            features = tv_features(arch)
            features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
            return SimpleNamespace(features=features)
        return build

    monkeypatch.setattr(pn, "tv", SimpleNamespace(**{arch: constructor(arch, states[n]) for n, arch in ARCH.items()}))
    return lpips.LPIPS(pretrained=True, net=net, version="0.1", pnet_rand=True, verbose=False)


def images(n=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x, y


@pytest.mark.parametrize("net,size", [("alex", 224), ("alex", 64), ("vgg", 64), ("squeeze", 64)])
def test_lpips_equals_the_lpips_package(home, states, monkeypatch, net, size):
    ours = metrics.load("lpips", net=net)
    theirs = reference(monkeypatch, states, net)
    x, y = images(n=3 if net != "vgg" else 2, size=size)
    with torch.no_grad():
        expected = theirs(2 * x - 1, 2 * y - 1).flatten()  # the reference's own range, [-1, 1]
        torch.testing.assert_close(theirs(x, y, normalize=True).flatten(), expected, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(ours.distance(x, y), expected, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(ours.distance_to(x, ours.represent(y)), expected, rtol=1e-5, atol=1e-8)
    assert ours.random_weights is False and ours.distance(x, x).abs().max() < 1e-6


@pytest.mark.parametrize("net", list(ARCH))
def test_the_heads_are_the_ones_shipped_in_the_lpips_package(empty_home, net):
    shipped = torch.load(package_path(f"lpips:weights/v0.1/{net}.pth"), weights_only=True, map_location="cpu")
    metric = metrics.load("lpips", net=net, pretrained=False)
    assert metric.random_weights is True
    assert len(metric.heads) == len(shipped)
    for k, head in enumerate(metric.heads):
        assert torch.equal(head, shipped[f"lin{k}.model.1.weight"])


def test_pair_distances_are_two_distance_calls_and_represent_is_indexable(empty_home):
    metric = metrics.load("lpips", pretrained=False)
    ref, x0 = images(n=3, size=48, seed=1)
    _, x1 = images(n=3, size=48, seed=2)
    d0, d1 = metric.pair_distances(ref, x0, x1)
    torch.testing.assert_close(d0, metric.distance(ref, x0))
    torch.testing.assert_close(d1, metric.distance(ref, x1))
    r0, r1 = metric.represent(x0), metric.represent(x1)
    assert r0.ndim == 2 and r0.shape[0] == 3
    index = torch.tensor([2, 0])
    e0, e1 = metric.distances_to(ref[index], r0[index], r1[index])
    torch.testing.assert_close(e0, d0[index])
    torch.testing.assert_close(e1, d1[index])
    with pytest.raises(SuiteError, match="represent the candidates at the reference's size"):
        metric.distance_to(ref[:, :, :32, :32], r0)


def test_a_moving_reference_costs_one_backbone_pass(empty_home, monkeypatch):
    metric = metrics.load("lpips", pretrained=False)
    ref, x0 = images(n=2, size=32)
    r0, r1 = metric.represent(x0), metric.represent(x0.flip(-1))
    calls = []
    features = metric.features
    monkeypatch.setattr(metric, "features", lambda x: calls.append(x) or features(x))
    metric.distances_to(ref, r0, r1)
    assert len(calls) == 1


def test_r_lpips_loads_a_checkpoint_in_the_r_lpips_layout(empty_home, states, monkeypatch, tmp_path):
    theirs = reference(monkeypatch, states, "alex")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # adversarial training moved the heads away from the shipped ones
        for lin in theirs.lins:
            lin.model[1].weight.copy_(torch.rand(lin.model[1].weight.shape, generator=g) / 50)
    checkpoint = {k: v for k, v in theirs.state_dict().items() if not k.startswith("scaling_layer.")}
    assert any(k.startswith("lins.") for k in checkpoint) and any(k.startswith("net.slice5.") for k in checkpoint)
    folder = empty_home / "suite" / "r-lpips-linf-x0"
    folder.mkdir(parents=True)
    torch.save(checkpoint, folder / "latest_net_linf_x0.pth")

    ours = metrics.load("r-lpips")
    x, y = images(n=3, size=64, seed=4)
    with torch.no_grad():
        expected = theirs(x, y, normalize=True).flatten()
    torch.testing.assert_close(ours.distance(x, y), expected, rtol=1e-5, atol=1e-8)
    assert ours.random_weights is False

    # the other variant, named explicitly as a file anywhere
    other = tmp_path / "somewhere" / "rlpips.pth"
    other.parent.mkdir()
    torch.save(checkpoint, other)
    explicit = metrics.load("r-lpips", variant="linf_x0_x1", weights=str(other))
    torch.testing.assert_close(explicit.distance(x, y), expected, rtol=1e-5, atol=1e-8)

    # strict: a checkpoint without a head is refused, not completed at random
    broken = {k: v for k, v in checkpoint.items() if "lin4" not in k and "lins.4" not in k}
    torch.save(broken, other)
    with pytest.raises(SuiteError, match="no linear head for layer 4"):
        metrics.load("r-lpips", weights=str(other))


def test_a_missing_backbone_names_the_file_and_every_place(empty_home):
    with pytest.raises(MissingWeightsError) as info:
        metrics.load("lpips")
    message = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in message
    assert str(empty_home / "suite" / "lpips-alex" / "alexnet-owt-7be5be79.pth") in message
    assert str(empty_home / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in message
    assert "lipsim weights fetch lpips-alex" in message
    with pytest.raises(MissingWeightsError, match="nowhere.pth"):
        metrics.load("lpips", net="vgg", weights=str(empty_home / "nowhere.pth"))
    with pytest.raises(MissingWeightsError, match="latest_net_linf_x0_x1.pth"):
        metrics.load("r-lpips", variant="linf_x0_x1")


def test_without_the_lpips_package_the_heads_are_missing_not_random(empty_home, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lpips" else real(name, *a))
    with pytest.raises(MissingWeightsError, match="expected alex.pth in .*package lpips not installed"):
        metrics.load("lpips", pretrained=False)


def test_backbones_are_found_in_every_place_and_the_path_is_not_the_identity(stored, states, empty_home):
    x, y = images(n=2, size=32)
    suite = empty_home / "suite" / "lpips-squeeze"
    suite.mkdir(parents=True)
    torch.save(states["squeeze"], suite / FILE["squeeze"])
    from_suite = metrics.load("lpips", net="squeeze")
    explicit_file = metrics.load("lpips", net="squeeze", weights=str(stored / "lpips-squeeze" / FILE["squeeze"]))
    explicit_folder = metrics.load("lpips", net="squeeze", weights=str(stored / "lpips-squeeze"))
    hub = empty_home / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (suite / FILE["squeeze"]).rename(hub / FILE["squeeze"])
    from_hub = metrics.load("lpips", net="squeeze")
    d = from_suite.distance(x, y)
    for other in (explicit_file, explicit_folder, from_hub):
        assert torch.equal(other.distance(x, y), d)
        assert other.metric_id() == from_suite.metric_id()
    assert metrics.load("lpips", net="squeeze", pretrained=False).metric_id() != from_suite.metric_id()


def test_bad_files_are_one_line_errors_naming_them(empty_home, states):
    folder = empty_home / "suite" / "lpips-alex"
    folder.mkdir(parents=True)
    path = folder / FILE["alex"]
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(SuiteError) as info:
        metrics.load("lpips")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    torch.save(states["squeeze"], path)  # another network's file under AlexNet's name
    with pytest.raises(SuiteError, match=f"{path} does not fit torchvision alexnet features"):
        metrics.load("lpips")
    heads = torch.load(package_path("lpips:weights/v0.1/alex.pth"), weights_only=True, map_location="cpu")
    del heads["lin4.model.1.weight"]
    torch.save(heads, folder / "alex.pth")  # the suite folder comes before the package
    with pytest.raises(SuiteError, match="no linear head for layer 4"):
        metrics.load("lpips", pretrained=False)
    with pytest.raises(SuiteError, match="net"):
        metrics.load("lpips", net="resnet")


@pytest.mark.parametrize("name,options", [("lpips", {}), ("lpips", {"net": "vgg"}), ("lpips", {"net": "squeeze"}),
                                          ("r-lpips", {})])
def test_a_pgd_step_runs_and_gradients_flow(empty_home, name, options):
    metric = metrics.load(name, pretrained=False, **options)
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
