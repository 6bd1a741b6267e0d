"""LPIPS and R-LPIPS: learned distances between unit-normalised deep features.

LPIPS (Zhang, Isola, Efros, Shechtman, Wang, "The Unreasonable Effectiveness of Deep
Features as a Perceptual Metric", CVPR 2018, arXiv:1801.03924), as version 0.1 of the
``lpips`` package computes it:

    d(x, y) = Σ_l  1/(H_l W_l) Σ_{h,w}  Σ_c  w_{l,c} · (x̂_l[c,h,w] − ŷ_l[c,h,w])²

with ``x̂_l = f_l / (‖f_l‖₂ over channels + 1e-10)`` the unit-normalised output of the
l-th slice of a torchvision ImageNet backbone (AlexNet, VGG16 or SqueezeNet 1.1, cut
into the 5/5/7 slices that ``lpips`` uses) and ``w_l ≥ 0`` a learned 1×1 linear head
without bias. The backbone sees ``(2x − 1 − shift) / scale``: images in ``[0, 1]`` are
mapped to ``[−1, 1]`` and then through the v0.1 ``ScalingLayer`` (shift
``(−.030, −.088, −.188)``, scale ``(.458, .448, .450)``).

R-LPIPS (Ghazanfari, Garg, Krishnamurthy, Khorrami, Araujo, "R-LPIPS: An Adversarially
Robust Perceptual Similarity Metric", ICML 2023 AdvML-Frontiers workshop,
arXiv:2307.15157) is the same function of AlexNet, with heads (and, for the ``tune``
runs, backbone) trained adversarially; its checkpoints are a full ``LPIPS.state_dict()``
(their ``ScalingLayer`` keeps its constants outside the state dict).

Weights are data (:mod:`metrics.weights`): tags ``lpips-alex``, ``lpips-vgg``,
``lpips-squeeze`` (torchvision's ImageNet file + the linear heads that ship inside the
``lpips`` package) and ``r-lpips-linf-x0``, ``r-lpips-linf-x0-x1`` (one checkpoint each).

Speed: ``represent(y)`` is the concatenation of ``y``'s flattened normalised features,
so an attack that moves only the reference runs one backbone pass per step
(:meth:`FeatureMetric.distances_to`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from metrics.base import Metric
from metrics.weights import WeightFile, WeightsTag, locate, register_tag
from suite import validate
from suite.errors import MissingWeightsError, SuiteError
from suite.registry import register_metric

# ----------------------------------------------------------------------------- weights

_TV = "https://download.pytorch.org/models/"

#: torchvision's ImageNet classification weights (the hash prefix is in the file name)
ALEXNET_FILE = WeightFile("alexnet-owt-7be5be79.pth", _TV + "alexnet-owt-7be5be79.pth", "7be5be79", torch_hub=True)
VGG16_FILE = WeightFile("vgg16-397923af.pth", _TV + "vgg16-397923af.pth", "397923af", torch_hub=True)
SQUEEZENET_FILE = WeightFile("squeezenet1_1-b8a52dc0.pth", _TV + "squeezenet1_1-b8a52dc0.pth", "b8a52dc0",
                             torch_hub=True)

LPIPS_PAPER = ("Zhang, Isola, Efros, Shechtman, Wang: The Unreasonable Effectiveness of Deep Features as a "
               "Perceptual Metric, CVPR 2018 (arXiv:1801.03924)")
R_LPIPS_PAPER = ("Ghazanfari, Garg, Krishnamurthy, Khorrami, Araujo: R-LPIPS: An Adversarially Robust Perceptual "
                 "Similarity Metric, ICML 2023 AdvML-Frontiers workshop (arXiv:2307.15157)")

_HEADS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/"
#: sha256 of the v0.1 heads (identical in lpips 0.1.4 on PyPI and in the repository's master branch)
_HEADS_SHA256 = {
    "alex": "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    "vgg": "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
    "squeeze": "4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76",
}


@dataclass(frozen=True)
class Backbone:
    """A torchvision feature extractor as ``lpips`` slices it.

    ``arch``: the torchvision constructor; ``cuts``: the end index (exclusive) in
    ``features`` of each slice; ``channels``: the channels of each slice's output.
    """

    arch: str
    file: WeightFile
    cuts: tuple[int, ...]
    channels: tuple[int, ...]


BACKBONES = {
    "alex": Backbone("alexnet", ALEXNET_FILE, (2, 5, 8, 10, 12), (64, 192, 384, 256, 256)),
    "vgg": Backbone("vgg16", VGG16_FILE, (4, 9, 16, 23, 30), (64, 128, 256, 512, 512)),
    "squeeze": Backbone("squeezenet1_1", SQUEEZENET_FILE, (2, 5, 8, 10, 11, 12, 13),
                        (64, 128, 256, 384, 384, 512, 512)),
}

for _net, _bb in BACKBONES.items():
    register_tag(WeightsTag(
        tag=f"lpips-{_net}", metric="lpips",
        files=(_bb.file, WeightFile(f"{_net}.pth", _HEADS_URL + f"{_net}.pth", _HEADS_SHA256[_net],
                                    package=f"lpips:weights/v0.1/{_net}.pth")),
        paper=LPIPS_PAPER,
        description=f"LPIPS v0.1: torchvision {_bb.arch} (ImageNet) + linear heads of the lpips package",
        extra={"net": _net}))

_R_LPIPS_URL = "https://github.com/SaraGhazanfari/R-LPIPS/raw/main/checkpoints/"
#: R-LPIPS variant -> (tag, checkpoint file); the repository states no hashes
R_LPIPS_VARIANTS = {
    "linf_x0": ("r-lpips-linf-x0", "latest_net_linf_x0.pth"),
    "linf_x0_x1": ("r-lpips-linf-x0-x1", "latest_net_linf_x0_x1.pth"),
}
for _variant, (_tag, _file) in R_LPIPS_VARIANTS.items():
    register_tag(WeightsTag(
        tag=_tag, metric="r-lpips", files=(WeightFile(_file, _R_LPIPS_URL + _file),),
        paper=R_LPIPS_PAPER,
        description=f"R-LPIPS (AlexNet), trained with ℓ∞ attacks on {_variant[5:].replace('_', ' and ')}",
        extra={"variant": _variant}))


# ----------------------------------------------------------------------------- loading helpers

def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: ``.safetensors``, else ``torch.load(weights_only=True)``.

    A file that cannot be read, or holds anything but a mapping of names to tensors, is
    a one-line :class:`SuiteError` naming it.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SuiteError(f"cannot read weights file {path} ({type(err).__name__}: {first})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise SuiteError(f"weights file {path} holds {type(state).__name__}, not a state dict of tensors")
    return state


def locate_file(tag: str, file: WeightFile, explicit: str | Path | None) -> Path:
    """``metrics.weights.locate`` for one file of a tag, taking an explicit *file* as that file.

    (``locate`` reads an explicit file as the file only for tags of one file.) A named
    file that does not exist is a :class:`MissingWeightsError`, like any missing file.
    """
    if explicit is not None:
        p = Path(explicit).expanduser()
        if p.is_file():
            return p
        if p.suffix in (".pth", ".pt", ".bin", ".safetensors", ".ckpt"):
            raise MissingWeightsError(tag, file.name, [str(p)])
    return locate(tag, file.name, explicit)


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """``module.load_state_dict(state)`` where every key must be present with its shape."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:4])}{' …' if len(missing) > 4 else ''}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:4])}{' …' if len(unexpected) > 4 else ''}")
    if wrong:
        problems.append(f"wrong shapes {', '.join(wrong[:4])}")
    if problems:
        raise SuiteError(f"weights file {path} does not fit {what}: {'; '.join(problems)}")
    module.load_state_dict({k: state[k].to(v.dtype) for k, v in own.items()})


def torchvision_features(arch: str, stop: int) -> nn.Sequential:
    """``torchvision.models.<arch>().features[:stop]`` (indices kept), built without the classifier.

    The model is built on the meta device, so the classifier is never allocated; the
    features are then materialised with uninitialised memory (load or initialise them).
    """
    import torchvision.models as tv

    with torch.device("meta"):
        model = getattr(tv, arch)(weights=None)
    return nn.Sequential(*list(model.features)[:stop]).to_empty(device="cpu")


def init_random_(features: nn.Module, seed: int = 0) -> None:
    """Random weights (only when asked): He-normal convolutions, zero biases, under ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)


def torchvision_state(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The ``features.*`` tensors of a torchvision classifier's state dict, prefix removed."""
    out = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if not out:
        raise SuiteError(f"weights file {path} has no 'features.*' tensors: not a torchvision ImageNet file")
    return out


# ----------------------------------------------------------------------------- shared metric machinery

class FeatureMetric(Metric):
    """A distance computed from per-layer feature maps of each image.

    Subclasses give :meth:`features` (a list of ``(B, C_l, H_l, W_l)`` maps) and
    :meth:`compare` (two such lists → ``(B,)``). ``distance`` is ``compare`` of the two
    images' features; ``represent`` flattens and concatenates a candidate's features
    into one ``(B, N)`` tensor, which ``distance_to`` cuts back into maps with the
    shapes the backbone gives for the other image (both images have one size).
    """

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def compare(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.check_images(x, y)
        if x.shape != y.shape:
            raise SuiteError(f"metric {self.name!r} compares images of one size; got {tuple(x.shape)} "
                             f"and {tuple(y.shape)}")
        return self.compare(self.features(x), self.features(y))

    def represent(self, x: torch.Tensor) -> torch.Tensor:
        """``x``'s feature maps, flattened and concatenated: ``(B, Σ_l C_l H_l W_l)``."""
        self.check_images(x)
        return torch.cat([f.flatten(1) for f in self.features(x)], dim=1)

    def _unflatten(self, r: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
        sizes = [f[0].numel() for f in like]
        if r.ndim != 2 or r.shape[1] != sum(sizes) or r.shape[0] != like[0].shape[0]:
            raise SuiteError(f"metric {self.name!r}: represent() gave {tuple(r.shape)}, but images of this size "
                             f"and batch need ({like[0].shape[0]}, {sum(sizes)}): represent the candidates at "
                             "the reference's size")
        return [part.reshape(f.shape) for part, f in zip(r.split(sizes, dim=1), like)]

    def distance_to(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        self.check_images(x)
        fx = self.features(x)
        return self.compare(fx, self._unflatten(r, fx))

    def distances_to(self, ref: torch.Tensor, r0: torch.Tensor, r1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One backbone pass for ``ref``, compared with both candidates' stored features."""
        self.check_images(ref)
        fr = self.features(ref)
        return self.compare(fr, self._unflatten(r0, fr)), self.compare(fr, self._unflatten(r1, fr))


# ----------------------------------------------------------------------------- LPIPS

def normalize_channels(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """``f / (‖f‖₂ over channels + eps)`` (``lpips.normalize_tensor``).

    Where a whole feature vector is zero the square root's gradient is NaN, but every
    slice ends in a ReLU, whose backward pass selects 0 there: images get finite gradients.
    """
    return f / (torch.sqrt(f.pow(2).sum(dim=1, keepdim=True)) + eps)


class _LPIPSNet(FeatureMetric):
    """The LPIPS function of one backbone; subclasses load the weights."""

    def _build(self, net: str) -> None:
        self.net = net
        self.backbone = BACKBONES[net]
        self.cuts = self.backbone.cuts
        self.features_net = torchvision_features(self.backbone.arch, self.cuts[-1])
        init_random_(self.features_net)
        self.heads = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1)) for c in self.backbone.channels])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def _finish(self) -> None:
        self.requires_grad_(False)  # fixed weights; gradients flow to the images only
        self.eval()

    def _load_backbone(self, path: Path) -> None:
        load_strict(self.features_net, torchvision_state(read_state_dict(path), path), path,
                    f"torchvision {self.backbone.arch} features")

    def _set_heads(self, heads: dict[int, torch.Tensor], path: Path) -> None:
        """Heads ``{layer: (1, C_l, 1, 1)}``: every layer present, every shape right."""
        for k, c in enumerate(self.backbone.channels):
            if k not in heads:
                raise SuiteError(f"weights file {path} has no linear head for layer {k} (lin{k}) of lpips "
                                 f"{self.net!r}")
            if tuple(heads[k].shape) != (1, c, 1, 1):
                raise SuiteError(f"weights file {path}: head lin{k} has shape {tuple(heads[k].shape)}, expected "
                                 f"{(1, c, 1, 1)} for lpips {self.net!r}")
        extra = sorted(set(heads) - set(range(len(self.backbone.channels))))
        if extra:
            raise SuiteError(f"weights file {path} has heads {extra} that lpips {self.net!r} does not have")
        with torch.no_grad():
            for k, head in enumerate(self.heads):
                head.copy_(heads[k])

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised outputs of the backbone's slices for images ``x`` in ``[0, 1]``."""
        h = ((2 * x.to(self.shift.dtype) - 1) - self.shift) / self.scale
        out, start = [], 0
        for cut in self.cuts:
            for i in range(start, cut):
                h = self.features_net[i](h)
            out.append(normalize_channels(h))
            start = cut
        return out

    def compare(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """``Σ_l mean_{h,w} (w_l ⋆ (x̂_l − ŷ_l)²)`` from normalised features."""
        total = 0
        for head, a, b in zip(self.heads, fx, fy):
            total = total + F.conv2d((a - b) ** 2, head).mean(dim=(2, 3))
        return total[:, 0]


def _heads_from_file(path: Path) -> dict[int, torch.Tensor]:
    """``{k: weight}`` from an lpips heads file (keys ``lin{k}.model.{0|1}.weight``, nothing else)."""
    state = read_state_dict(path)
    heads: dict[int, torch.Tensor] = {}
    for key, value in state.items():
        m = re.fullmatch(r"lin(\d+)\.model\.[01]\.weight", key)
        if m is None:
            raise SuiteError(f"weights file {path}: unexpected key {key!r} in LPIPS linear heads")
        heads[int(m[1])] = value
    return heads


@register_metric("lpips")
class LPIPS(_LPIPSNet):
    """LPIPS v0.1 (Zhang et al., CVPR 2018): learned distance of unit-normalised deep features.

    ``d(x, y) = Σ_l mean_{h,w} Σ_c w_{l,c} (x̂_l − ŷ_l)²_{c,h,w}`` (module docstring),
    equal to ``lpips.LPIPS(net=net, version="0.1")(x, y, normalize=True)``.

    Args:
        net: backbone, ``"alex"`` (default), ``"vgg"`` or ``"squeeze"``; weights tag ``lpips-<net>``.
        weights: torchvision's ImageNet file of that backbone, or a folder holding it
            (default: looked up by :mod:`metrics.weights`). The linear heads are always
            the v0.1 ones that ship inside the ``lpips`` package (or
            ``$LIPSIM_SUITE_WEIGHTS/lpips-<net>/<net>.pth``).
        pretrained: ``False`` draws a random backbone (He-normal, seed 0) and needs no
            backbone file; only when asked (``random_weights`` then says so).
    """

    def __init__(self, net: str = "alex", weights: str | Path | None = None, pretrained: bool = True):
        super().__init__()
        net = validate.choice(net, tuple(BACKBONES), "lpips: net")
        pretrained = validate.boolean(pretrained, "lpips: pretrained")
        self._build(net)
        tag = f"lpips-{net}"
        #: whether the backbone is random (``pretrained=False``)
        self.random_weights = not pretrained
        if pretrained:
            self._load_backbone(locate_file(tag, self.backbone.file, weights))
        heads_path = locate(tag, f"{net}.pth")
        self._set_heads(_heads_from_file(heads_path), heads_path)
        self._finish()


@register_metric("r-lpips", aliases=("rlpips",))
class RLPIPS(_LPIPSNet):
    """R-LPIPS (Ghazanfari et al. 2023): LPIPS on AlexNet, adversarially trained.

    The LPIPS v0.1 function (see :class:`LPIPS`) with the backbone and heads of an
    R-LPIPS checkpoint: a full ``LPIPS.state_dict()`` (keys ``net.slice*.*``,
    ``lin*.model.1.weight`` and their ``lins.*`` aliases; no scaling-layer keys, whose
    constants are fixed), loaded strictly.

    Args:
        variant: ``"linf_x0"`` (default; tag ``r-lpips-linf-x0``, ``latest_net_linf_x0.pth``)
            or ``"linf_x0_x1"`` (``r-lpips-linf-x0-x1``, ``latest_net_linf_x0_x1.pth``):
            ℓ∞ adversarial training on ``x0``, or on ``x0`` and ``x1``.
        weights: the checkpoint file, or a folder holding it (default: looked up by
            :mod:`metrics.weights`).
        pretrained: ``False`` draws everything at random (He-normal backbone, non-negative
            uniform heads, seed 0) and needs no file; only when asked.
    """

    def __init__(self, variant: str = "linf_x0", weights: str | Path | None = None, pretrained: bool = True):
        super().__init__()
        variant = validate.choice(variant, tuple(R_LPIPS_VARIANTS), "r-lpips: variant")
        pretrained = validate.boolean(pretrained, "r-lpips: pretrained")
        self._build("alex")
        self.variant = variant
        self.random_weights = not pretrained
        if pretrained:
            tag = R_LPIPS_VARIANTS[variant][0]
            self._load_checkpoint(locate(tag, explicit=weights))
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self._set_heads({k: torch.rand(1, c, 1, 1) / c for k, c in enumerate(self.backbone.channels)},
                                Path("<random>"))
        self._finish()

    def _load_checkpoint(self, path: Path) -> None:
        state = read_state_dict(path)
        if state and all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
            state = {k[len("module."):]: v for k, v in state.items()}
        backbone, heads, aliases = {}, {}, {}
        for key, value in state.items():
            if m := re.fullmatch(r"net\.slice\d+\.(\d+\..+)", key):
                backbone[m[1]] = value
            elif m := re.fullmatch(r"lin(\d+)\.model\.[01]\.weight", key):
                heads[int(m[1])] = value
            elif m := re.fullmatch(r"lins\.(\d+)\.model\.[01]\.weight", key):
                aliases[int(m[1])] = value
            elif key in ("scaling_layer.shift", "scaling_layer.scale"):
                if not torch.allclose(value.reshape(1, 3, 1, 1).float(), getattr(self, key.split(".")[1])):
                    raise SuiteError(f"weights file {path}: {key} differs from LPIPS v0.1's constants")
            else:
                raise SuiteError(f"weights file {path}: unexpected key {key!r} in an R-LPIPS checkpoint")
        for k, value in aliases.items():  # lins.k is the same module as link
            if k in heads and not torch.equal(heads[k], value):
                raise SuiteError(f"weights file {path}: lin{k} and lins.{k} differ")
            heads.setdefault(k, value)
        load_strict(self.features_net, backbone, path, "the AlexNet slices of R-LPIPS")
        self._set_heads(heads, path)


__all__ = ["BACKBONES", "FeatureMetric", "LPIPS", "RLPIPS", "R_LPIPS_VARIANTS", "load_strict", "locate_file",
           "normalize_channels", "read_state_dict", "torchvision_features", "torchvision_state"]
