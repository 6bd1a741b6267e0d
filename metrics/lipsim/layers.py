"""1-Lipschitz layers of LipSim: SDP-based Lipschitz layers (SLL, Araujo et al., ICLR 2023).

An SLL layer is the residual map

    h(x) = x − 2·W·T⁻¹·ReLU(Wᵀx + b),   T = diag_i( Σ_j |WᵀW|_ij · q_j / q_i ),  q = exp(q_param),

which is 1-Lipschitz in ℓ2 for every W, b and q (Araujo et al., the SLL theorem). ``T⁻¹`` is
taken entry-wise and set to 0 where ``T_ii = 0`` (then column i of W is zero and
contributes nothing). The convolutional layer uses the same formula with W a
convolution: ``Wᵀx`` is ``conv2d(x, kernel)`` (``channels → inner``), ``W z`` its
adjoint ``conv_transpose2d(z, kernel)``, and the row sums of ``|WᵀW|`` are the sums of
the absolute ``(2k−1)×(2k−1)`` self-convolution of the kernel over all shifts (an
interior row; rows at the zero-padded border sum fewer terms, so the bound holds there too).

Parameter names and shapes follow the LipSim reference so released checkpoints
load as they are: ``kernel (inner, channels, k, k)``, ``bias (1, inner, 1, 1)``,
``q (inner,)`` for convolutions; ``weight (inner, features)``, ``bias (1, inner)``,
``q (inner,)`` for dense layers.

Speed: when no gradient can reach the parameters (``torch.no_grad()``, or frozen
parameters as in a metric), ``T`` and the folded kernel ``2·W·T⁻¹`` are computed
once and cached until a parameter changes (tracked by the tensors' version
counters), and the layer runs with fused, in-place elementwise work where autograd
allows. The plain path is the formula above, evaluated every call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def safe_inv(x: torch.Tensor) -> torch.Tensor:
    """``1/x`` entry-wise, with ``1/0 := 0``; finite gradients everywhere."""
    zero = x == 0
    return torch.where(zero, torch.zeros_like(x), 1 / torch.where(zero, torch.ones_like(x), x))


def _fused_conv_available() -> bool:
    try:
        torch.ops.mkldnn._convolution_pointwise.binary  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return torch.backends.mkldnn.is_available()


#: oneDNN convolutions with a fused ReLU / residual add (the ops torch.compile emits on CPU)
_FUSED_CONV = _fused_conv_available()


def _params_need_grad(module: nn.Module) -> bool:
    return torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters(recurse=False))


class _CachedSLL(nn.Module):
    """Cache of the derived tensors of an SLL layer, invalidated when any parameter changes."""

    def __init__(self):
        super().__init__()
        self._cache_key: tuple | None = None
        self._cache: tuple = ()

    def _key(self) -> tuple:
        return tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in self.parameters(recurse=False))

    def _derived(self) -> tuple:
        key = self._key()
        if key != self._cache_key:
            with torch.no_grad():
                self._cache = self._derive()
            self._cache_key = key
        return self._cache

    def _derive(self) -> tuple:
        raise NotImplementedError

    def _apply(self, fn, recurse=True):  # .to(), .half(), ...: drop derived tensors of the old device/dtype
        self._cache_key, self._cache = None, ()
        return super()._apply(fn, recurse)


class SLLConv2d(_CachedSLL):
    """Convolutional SLL layer on ``(B, channels, H, W)``, same padding, stride 1.

    Args:
        channels: input = output channels.
        inner: inner width (output channels of ``Wᵀx``); the reference's ``conv_size``.
        kernel_size: odd side of the square kernel (3).
        q_scaling: use ``q_j / q_i`` in ``T`` as in the SLL paper; ``False`` gives the
            LipSim reference's ``T_ii = Σ_j |WᵀW|_ij`` (its ``q`` cancels), which is the
            ``q = 1`` case of the same theorem and equally 1-Lipschitz.
    """

    def __init__(self, channels: int, inner: int, kernel_size: int = 3, q_scaling: bool = False):
        super().__init__()
        self.channels, self.inner, self.kernel_size, self.q_scaling = channels, inner, kernel_size, q_scaling
        self.padding = kernel_size // 2
        self.kernel = nn.Parameter(torch.empty(inner, channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(1, inner, 1, 1))
        self.q = nn.Parameter(torch.randn(inner))
        nn.init.xavier_normal_(self.kernel)
        bound = 1 / math.sqrt(channels * kernel_size * kernel_size)
        nn.init.uniform_(self.bias, -bound, bound)

    def compute_t(self) -> torch.Tensor:
        """Diagonal of ``T`` (shape ``(inner,)``) from the kernel's self-convolution."""
        ktk = F.conv2d(self.kernel, self.kernel, padding=self.kernel_size - 1).abs().sum((2, 3))
        if not self.q_scaling:
            return ktk.sum(1)
        q = torch.exp(self.q)
        return (ktk * q[None, :]).sum(1) / q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _params_need_grad(self):
            return self.forward_plain(x)
        return self.forward_fast(x)

    def forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        t_inv = safe_inv(self.compute_t()).view(1, -1, 1, 1)
        z = F.relu(F.conv2d(x, self.kernel, self.bias.view(-1), padding=self.padding))
        return x - 2 * F.conv_transpose2d(t_inv * z, self.kernel, padding=self.padding)

    def _derive(self) -> tuple:
        scale = 2 * safe_inv(self.compute_t())
        # conv_transpose2d(z, K) = conv2d(z, flip(K)ᵀ) at stride 1, same padding; fold 2·T⁻¹ into it
        back = (self.kernel * scale.view(-1, 1, 1, 1)).transpose(0, 1).flip(2, 3)
        fmt = torch.channels_last
        return (
            self.kernel.detach().contiguous(memory_format=fmt),
            self.bias.detach().reshape(-1).contiguous(),
            back.contiguous(memory_format=fmt),
            (-back).contiguous(memory_format=fmt),
        )

    def forward_fast(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """The same function from cached ``T``; fused oneDNN kernels when no gradient is needed.

        Without autograd on CPU float32, the first convolution carries the ReLU and the
        second adds the residual (``x + conv(z, −2·W·T⁻¹)``) inside oneDNN: the inner
        width is tiny, so the layer is bound by memory traffic, and every pass saved
        counts. ``inplace=True`` (for a caller that owns ``x``, as the network does)
        accumulates into ``x`` itself instead of a fresh tensor.
        """
        down, bias, back, neg_back = self._derived()
        p = [self.padding] * 2
        if x.requires_grad and torch.is_grad_enabled():
            return x - F.conv2d(F.relu(F.conv2d(x, down, bias, padding=p)), back, padding=p)
        if _FUSED_CONV and x.device.type == "cpu" and x.dtype == torch.float32:
            z = torch.ops.mkldnn._convolution_pointwise(x, down, bias, p, [1, 1], [1, 1], 1, "relu", [], "")
            if inplace:
                return torch.ops.mkldnn._convolution_pointwise_.binary(
                    x, z, neg_back, None, p, [1, 1], [1, 1], 1, "add", None, None, [], ""
                )
            return torch.ops.mkldnn._convolution_pointwise.binary(
                z, x, neg_back, None, p, [1, 1], [1, 1], 1, "add", None, None, [], ""
            )
        y = F.conv2d(F.conv2d(x, down, bias, padding=p).relu_(), back, padding=p)
        return x.sub_(y) if inplace else torch.sub(x, y, out=y)


class SLLLinear(_CachedSLL):
    """Dense SLL layer on ``(B, features)``.

    Args:
        features: input = output features.
        inner: inner width (rows of ``weight``); the reference's ``n_features``.
    """

    def __init__(self, features: int, inner: int):
        super().__init__()
        self.features, self.inner = features, inner
        self.weight = nn.Parameter(torch.empty(inner, features))
        self.bias = nn.Parameter(torch.empty(1, inner))
        self.q = nn.Parameter(torch.randn(inner))
        nn.init.xavier_normal_(self.weight)
        bound = 1 / math.sqrt(features)
        nn.init.uniform_(self.bias, -bound, bound)

    def compute_t(self) -> torch.Tensor:
        """Diagonal of ``T``: ``T_ii = Σ_j |W Wᵀ|_ij q_j / q_i`` (shape ``(inner,)``)."""
        q = torch.exp(self.q)
        return ((self.weight @ self.weight.T).abs() * q[None, :]).sum(1) / q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _params_need_grad(self):
            return self.forward_plain(x)
        return self.forward_fast(x)

    def forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        t_inv = safe_inv(self.compute_t())
        z = F.relu(F.linear(x, self.weight, self.bias.view(-1)))
        return x - 2 * F.linear(t_inv * z, self.weight.T)

    def _derive(self) -> tuple:
        back = self.weight * (2 * safe_inv(self.compute_t()))[:, None]
        return self.weight.detach(), self.bias.detach().reshape(-1), back.contiguous()

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """``x − ReLU(W x + b)·(2 T⁻¹ W)`` as one ``addmm`` from cached ``T``."""
        weight, bias, back = self._derived()
        z = F.linear(x, weight, bias)
        z = F.relu(z) if (x.requires_grad and torch.is_grad_enabled()) else z.relu_()
        return torch.addmm(x, z, back, alpha=-1)


class PadChannels(nn.Module):
    """Zero-pad ``(B, c_in, H, W)`` to ``(B, c_out, H, W)``: an isometry, so 1-Lipschitz."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.c_in, self.c_out = c_in, c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, 0, 0, 0, self.c_out - self.c_in))


class SumPool4(nn.Module):
    """4×4 pooling with stride 4 and divisor 4 (sum/4): operator norm √16/4 = 1.

    Each output is ``(1/4)·Σ`` of 16 disjoint inputs; by Cauchy–Schwarz
    ``|Σ x_k|/4 ≤ √16·‖x_block‖/4 = ‖x_block‖``, and the blocks are disjoint.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 4, stride=4, divisor_override=4)


__all__ = ["SLLConv2d", "SLLLinear", "PadChannels", "SumPool4", "safe_inv"]
