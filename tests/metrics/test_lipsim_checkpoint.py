"""LipSim checkpoints: our safetensors format, and the released reference ``.pth`` layout."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import metrics
from metrics.lipsim import checkpoint
from metrics.lipsim.metric import LipSimMetric
from metrics.lipsim.model import LipSimNet
from metrics.lipsim.presets import LipSimConfig, preset
from suite.errors import SuiteError

# the reference layout with every dimension shrunk: 2 poolings as in the reference, 3 conv, 2 dense
REDUCED = LipSimConfig(
    name="reduced", input_size=32, channels=6, conv_depth=3, conv_inner=5, n_pools=2,
    dense_depth=2, dense_inner=16, embed_dim=20,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_state(config: LipSimConfig, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A ``model_state_dict`` as the LipSim code saves it (DataParallel + NormalizedModel prefixes)."""
    state = {}
    c = config
    for i in range(c.conv_depth):
        layer = {
            "kernel": torch.randn(c.conv_inner, c.channels, c.kernel_size, c.kernel_size, generator=gen) * 0.3,
            "bias": torch.randn(1, c.conv_inner, 1, 1, generator=gen) * 0.1,
            "q": torch.randn(c.conv_inner, generator=gen),
        }
        for name, t in layer.items():
            state[f"module.model.base.1.{i}.{name}"] = t
            state[f"module.model.convs.{i}.{name}"] = t  # the reference registers its modules twice
    for j in range(1, c.dense_depth + 1):
        layer = {
            "weight": torch.randn(c.dense_inner, c.dense_width, generator=gen) * 0.1,
            "bias": torch.randn(1, c.dense_inner, generator=gen) * 0.1,
            "q": torch.randn(c.dense_inner, generator=gen),
        }
        for name, t in layer.items():
            state[f"module.model.base.2.{j}.{name}"] = t
            state[f"module.model.linear.{j}.{name}"] = t
    state["module.model.base.1.0.alpha"] = torch.ones(1)
    return state


def _reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor, n_pools: int, embed_dim: int) -> torch.Tensor:
    """The reference computation written out from the paper and the reference's conventions, independently."""
    p = "module.model."
    channels = state[p + "base.1.0.kernel"].shape[1]
    h = torch.cat([x, x.new_zeros(x.shape[0], channels - x.shape[1], *x.shape[2:])], 1)
    i = 0
    while f"{p}base.1.{i}.kernel" in state:
        k, b = state[f"{p}base.1.{i}.kernel"], state[f"{p}base.1.{i}.bias"]
        q = torch.exp(state[f"{p}base.1.{i}.q"]).view(-1, 1, 1, 1)
        ktk = F.conv2d(k, k, padding=k.shape[-1] - 1).abs()
        t = (ktk * q / q).sum((1, 2, 3))  # the reference's q_i⁻¹·|KᵀK|·q_i: q cancels
        t = torch.where(t == 0, 0.0, 1 / t).view(1, -1, 1, 1)
        z = F.relu(F.conv2d(h, k, padding=k.shape[-1] // 2) + b)
        h = h - 2 * F.conv_transpose2d(t * z, k, padding=k.shape[-1] // 2)
        i += 1
    for _ in range(n_pools):
        h = F.avg_pool2d(h, 4, divisor_override=4)
    h = h.flatten(1)
    j = 1
    while f"{p}base.2.{j}.weight" in state:
        w, b, q = (state[f"{p}base.2.{j}.{n}"] for n in ("weight", "bias", "q"))
        q = torch.exp(q)
        t = (torch.abs((w @ w.T) * q[None, :] / q[:, None])).sum(1)
        z = F.relu(h @ w.T + b)
        h = h - 2 * (z / t) @ w
        j += 1
    return h[:, :embed_dim]


def _save_reference(path, state):
    torch.save({"epoch": 3, "global_step": 100, "model_state_dict": state, "optimizer_state_dict": {}}, path)


def test_reference_checkpoint_imports_with_the_identical_function(tmp_path):
    gen = torch.Generator().manual_seed(0)
    state = _reference_state(REDUCED, gen)
    path = tmp_path / "model.ckpt-100.pth"
    _save_reference(path, state)
    net = checkpoint.import_reference(path, REDUCED.replace(conv_q_scaling=True))
    assert net.config.conv_q_scaling is False  # the reference's convolutional T ignores q
    x = torch.rand(4, 3, 32, 32, generator=gen)
    expected = _reference_forward(state, x, REDUCED.n_pools, REDUCED.embed_dim)
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(net(x).detach(), expected, atol=1e-5, rtol=1e-5)
    loaded = checkpoint.load(path, REDUCED)  # the generic loader dispatches on the suffix
    torch.testing.assert_close(loaded(x).detach(), expected, atol=1e-5, rtol=1e-5)


def test_reference_architecture_is_read_from_the_shapes(tmp_path):
    config = REDUCED.replace(input_size=64, embed_dim=6 * 16)  # without a config: 2 poolings, embed min(1792, width)
    gen = torch.Generator().manual_seed(1)
    state = _reference_state(config, gen)
    path = tmp_path / "ref.pth"
    _save_reference(path, state)
    metric = metrics.load("lipsim", weights=str(path))
    net = metric.net
    assert (net.config.input_size, net.config.channels, net.config.conv_depth, net.config.dense_depth) == (64, 6, 3, 2)
    assert net.config.embed_dim == 96
    x = torch.rand(2, 3, 64, 64, generator=gen)
    torch.testing.assert_close(metric.embed(x), _reference_forward(state, x, 2, 96), atol=1e-5, rtol=1e-5)


def test_small_preset_matches_the_released_checkpoint_layout():
    """Key names and shapes of preset small, mapped to the reference keys, without allocating it."""
    with torch.device("meta"):
        net = LipSimNet(preset("small"))
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    ref = {}
    for i in range(20):
        ref[f"convs.{i}.kernel"], ref[f"convs.{i}.bias"], ref[f"convs.{i}.q"] = (5, 45, 3, 3), (1, 5, 1, 1), (5,)
    for j in range(7):
        ref[f"dense.{j}.weight"], ref[f"dense.{j}.bias"], ref[f"dense.{j}.q"] = (1024, 8820), (1, 1024), (1024,)
    assert shapes == ref
    # and the released shapes are recognised as preset small
    fake = {}
    for i in range(20):
        fake[i] = {"kernel": torch.empty(5, 45, 3, 3, device="meta")}
    dense = {j: {"weight": torch.empty(1024, 8820, device="meta")} for j in range(1, 8)}
    assert checkpoint._infer_config(fake, dense, "released.pth") == preset("small")


def test_our_checkpoint_roundtrips(tmp_path):
    torch.manual_seed(3)
    net = LipSimNet(REDUCED.replace(requires_bias=True, bias_value=0.7, conv_q_scaling=True))
    out = checkpoint.save(net, tmp_path / "ckpt")
    assert json.loads((out / "config.json").read_text())["bias_value"] == 0.7
    for path in (out, out / "model.safetensors"):
        loaded = checkpoint.load(path)
        assert loaded.config == net.config
        x = torch.rand(2, 3, 32, 32)
        torch.testing.assert_close(loaded.embed(x), net.embed(x))
    metric = metrics.load("lipsim", weights=str(out))
    assert metric.net.config.requires_bias and metric.weights_id() == LipSimMetric.from_net(net).weights_id()
    assert metrics.load("lipsim", weights=str(out), requires_bias=False).weights_id() != metric.weights_id()


def test_missing_weight_file_names_the_expected_file(tmp_path):
    with pytest.raises(SuiteError, match="model.safetensors"):
        metrics.load("lipsim", weights=str(tmp_path / "nowhere"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.safetensors").write_bytes(b"")
    with pytest.raises(SuiteError, match="config.json"):
        metrics.load("lipsim", weights=str(tmp_path / "half"))
    with pytest.raises(SuiteError, match="missing.pth"):
        metrics.load("lipsim", weights=str(tmp_path / "missing.pth"))


def test_reference_checkpoint_with_foreign_entries_or_shapes_is_refused(tmp_path):
    gen = torch.Generator().manual_seed(2)
    state = _reference_state(REDUCED, gen)
    state["module.model.last_last.weight"] = torch.zeros(3, 3)
    _save_reference(tmp_path / "a.pth", state)
    with pytest.raises(SuiteError, match="last_last"):
        checkpoint.import_reference(tmp_path / "a.pth", REDUCED)
    _save_reference(tmp_path / "b.pth", _reference_state(REDUCED, gen))
    with pytest.raises(SuiteError, match="shape"):
        checkpoint.import_reference(tmp_path / "b.pth", REDUCED.replace(dense_inner=8))


class _NotATensor:
    pass


def test_reference_checkpoint_is_read_with_weights_only(tmp_path):
    torch.save({"model_state_dict": {}, "payload": _NotATensor()}, tmp_path / "evil.pth")
    with pytest.raises(SuiteError, match="weights_only"):
        checkpoint.import_reference(tmp_path / "evil.pth")


def test_random_weights_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    a = metrics.load("lipsim", seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert a.weights_id() == metrics.load("lipsim", seed=1).weights_id() != metrics.load("lipsim", seed=2).weights_id()
    assert a.input_size == 64 and a.certifiable and a.certified_threats == ("ref", "all")
