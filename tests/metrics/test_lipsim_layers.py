"""SLL layers and the LipSim network: 1-Lipschitz under attack, fast path equal to the plain one."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jvp, vjp

from metrics.lipsim import layers
from metrics.lipsim.layers import PadChannels, SLLConv2d, SLLLinear, SumPool4, safe_inv
from metrics.lipsim.model import LipSimNet
from metrics.lipsim.presets import LipSimConfig, preset
from suite.errors import SuiteError, UnknownNameError

TOL = 1 + 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = LipSimConfig(
    name="test", input_size=16, channels=5, conv_depth=3, conv_inner=4, n_pools=1,
    dense_depth=2, dense_inner=24, embed_dim=40,
)


def _spread(module: torch.nn.Module, gen: torch.Generator) -> torch.nn.Module:
    """Adversarial parameters: large weights, biases that split ReLUs, q spread over e^±3."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("q"):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 3)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)
            else:
                p.mul_(4)
    return module


def _spectral_norm(fn, x: torch.Tensor, iters: int = 60) -> float:
    """Largest singular value of the Jacobian of ``fn`` at ``x`` by power iteration on JᵀJ (jvp, vjp)."""
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    v /= v.norm()
    sigma = 0.0
    for _ in range(iters):
        _, jv = jvp(fn, x, v)
        sigma = jv.norm().item()
        _, w = vjp(fn, x, jv)
        v = w / w.norm()
    return sigma


def _layer_cases():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    return {
        "conv-reference-T": (_spread(SLLConv2d(5, 4), gen).double(), (2, 5, 7, 7)),
        "conv-q-scaled-T": (_spread(SLLConv2d(5, 4, q_scaling=True), gen).double(), (2, 5, 7, 7)),
        "conv-5x5-wide-inner": (_spread(SLLConv2d(3, 9, kernel_size=5, q_scaling=True), gen).double(), (1, 3, 6, 6)),
        "dense": (_spread(SLLLinear(12, 20), gen).double(), (3, 12)),
        "dense-narrow": (_spread(SLLLinear(12, 3), gen).double(), (3, 12)),
        "pool": (SumPool4().double(), (2, 3, 8, 8)),
        "pad": (PadChannels(3, 7).double(), (2, 3, 4, 4)),
    }


@pytest.mark.parametrize("case", list(_layer_cases()))
def test_every_layer_has_jacobian_norm_at_most_one(case):
    module, shape = _layer_cases()[case]
    gen = torch.Generator().manual_seed(2)
    x = torch.randn((3 * shape[0], *shape[1:]), generator=gen, dtype=torch.float64) * 2
    assert _spectral_norm(module, x) <= TOL


def test_network_jacobian_norm_at_most_one_and_near_one_somewhere():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    net = _spread(LipSimNet(SMALL.replace(conv_q_scaling=True)), gen).double()
    # a batch's Jacobian is block diagonal: power iteration finds the largest norm over the points
    x = torch.rand(4, 3, 16, 16, generator=gen, dtype=torch.float64)
    sigma = _spectral_norm(net, x, iters=40)
    assert 0.3 < sigma <= TOL  # at most 1, and not trivially contractive: the test has teeth


def _max_ratio_by_ascent(fn, shape, steps: int, gen: torch.Generator) -> float:
    """Adam ascent on ‖f(x) − f(y)‖ / ‖x − y‖ over pairs (close and far starts); the largest ratio seen."""
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    y = x + torch.randn(shape, generator=gen, dtype=torch.float64) * torch.logspace(-3, 0, shape[0], dtype=torch.float64).view(
        -1, *[1] * (len(shape) - 1)
    )
    x.requires_grad_(True)
    y.requires_grad_(True)
    opt = torch.optim.Adam([x, y], lr=0.02)
    best = 0.0
    for _ in range(steps):
        ratio = (fn(x) - fn(y)).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
        best = max(best, ratio.max().item())
        opt.zero_grad()
        (-ratio.sum()).backward()
        opt.step()
    return best


def test_gradient_ascent_over_weights_and_inputs_never_exceeds_one():
    """Train the weights to be as expansive as possible, then attack the pairs: ratio ≤ 1 throughout."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(4)
    net = LipSimNet(SMALL.replace(conv_q_scaling=True)).double()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    x = torch.rand(8, 3, 16, 16, generator=gen, dtype=torch.float64)
    # block-constant directions pass the 4×4 pooling unattenuated
    v = torch.randn(8, 3, 4, 4, generator=gen, dtype=torch.float64).repeat_interleave(4, 2).repeat_interleave(4, 3) * 1e-2
    for _ in range(25):
        ratio = (net(x + v) - net(x)).norm(dim=1) / v.flatten(1).norm(dim=1)
        assert ratio.max().item() <= TOL
        opt.zero_grad()
        (-ratio.mean()).backward()
        opt.step()
    assert ratio.max().item() > 0.5
    net.requires_grad_(False)
    assert _max_ratio_by_ascent(net, (6, 3, 16, 16), 40, gen) <= TOL
    for module, shape in ((_spread(SLLConv2d(4, 6, q_scaling=True), gen).double(), (4, 4, 6, 6)),
                          (_spread(SLLLinear(10, 15), gen).double(), (6, 10))):
        assert _max_ratio_by_ascent(module, shape, 60, gen) <= TOL


def test_fast_path_equals_plain_path():
    torch.manual_seed(0)
    net = LipSimNet(SMALL.replace(input_size=32, channels=8, conv_inner=5))
    x = torch.rand(5, 3, 32, 32)
    plain = net(x)  # parameters require grad: the plain formula
    with torch.no_grad():
        fast = net(x)
    torch.testing.assert_close(fast, plain.detach(), atol=1e-5, rtol=1e-5)
    net.requires_grad_(False)
    attack = net(x.clone().requires_grad_(True))  # cached T, autograd-friendly ops
    torch.testing.assert_close(attack.detach(), plain.detach(), atol=1e-5, rtol=1e-5)


def test_fast_path_without_fused_kernels_equals_plain_path(monkeypatch):
    monkeypatch.setattr(layers, "_FUSED_CONV", False)
    torch.manual_seed(0)
    net = LipSimNet(SMALL)
    x = torch.rand(3, 3, 16, 16)
    plain = net(x).detach()
    with torch.no_grad():
        torch.testing.assert_close(net(x), plain, atol=1e-5, rtol=1e-5)


def test_cached_t_follows_parameter_updates():
    torch.manual_seed(0)
    net = LipSimNet(SMALL)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        before = net(x)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net(x).pow(2).sum().backward()
    opt.step()
    with torch.no_grad():
        after = net(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, net(x).detach(), atol=1e-5, rtol=1e-5)
    other = LipSimNet(SMALL)
    net.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(net(x), other(x).detach(), atol=1e-5, rtol=1e-5)


def test_safe_inv_is_zero_at_zero_with_finite_gradient():
    t = torch.tensor([0.0, 2.0, 0.5], requires_grad=True)
    out = safe_inv(t)
    out.sum().backward()
    assert out.tolist() == [0.0, 0.5, 2.0]
    assert torch.isfinite(t.grad).all()


def test_zero_kernel_row_contributes_nothing():
    layer = SLLConv2d(3, 4)
    with torch.no_grad():
        layer.kernel[1].zero_()
    assert layer.compute_t()[1] == 0
    x = torch.rand(1, 3, 5, 5)
    assert torch.isfinite(layer(x)).all()


def test_presets_and_config_validation():
    small = preset("small")
    assert (small.input_size, small.channels, small.conv_depth, small.conv_inner) == (224, 45, 20, 5)
    assert (small.n_pools, small.dense_depth, small.dense_inner, small.embed_dim) == (2, 7, 1024, 1792)
    assert small.dense_width == 45 * 14 * 14 == 8820
    assert (preset("medium").conv_depth, preset("medium").channels, preset("medium").dense_depth) == (30, 60, 10)
    assert (preset("large").conv_depth, preset("large").channels, preset("large").dense_inner) == (50, 90, 2048)
    assert preset("tiny", embed_dim=32).embed_dim == 32
    with pytest.raises(UnknownNameError, match="small"):
        preset("smal")
    with pytest.raises(SuiteError, match="divisible"):
        preset("tiny", input_size=50)
    with pytest.raises(SuiteError, match="unknown fields"):
        LipSimConfig.from_dict({"depth": 3})


def test_network_rejects_wrong_image_size():
    net = LipSimNet(SMALL)
    with pytest.raises(SuiteError, match="16, 16"):
        net(torch.rand(1, 3, 20, 20))


def test_requires_bias_appends_constant_coordinate():
    net = LipSimNet(SMALL.replace(requires_bias=True, bias_value=0.5))
    x = torch.rand(2, 3, 16, 16)
    e = net.embed(x)
    assert e.shape == (2, SMALL.embed_dim + 1)
    torch.testing.assert_close(e[:, :-1], net(x))
    assert (e[:, -1] == 0.5).all()


@pytest.mark.parametrize("fused", [True, False])
def test_layer_fast_path_leaves_its_input_alone(fused, monkeypatch):
    monkeypatch.setattr(layers, "_FUSED_CONV", fused and layers._FUSED_CONV)
    layer = SLLConv2d(6, 3)
    x = torch.rand(2, 6, 9, 9).contiguous(memory_format=torch.channels_last)
    copy = x.clone()
    plain = layer.forward_plain(x).detach()
    with torch.no_grad():
        fast = layer(x)
    assert torch.equal(x, copy)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
