"""CLIP-family embedding metrics: ``clip`` (OpenAI), ``open_clip`` (OpenCLIP) and ``r-clip`` (robust CLIP).

All three are the cosine distance between image embeddings of a CLIP image tower,

    d(x, y) = 1 − cos∠(f(T(x)), f(T(y))),

where ``T`` maps an image in ``[0, 1]`` to the tower's input (PIL-style bicubic resize to the
tower's size, an optional centre crop, then ``(x − mean) / std`` with the weights' own
statistics) and ``f`` is open_clip's ``encode_image`` without its final normalisation
(``visual(·)``: the projected CLS token for ViTs, the pooled projection for ConvNeXts and
ResNets). ``T`` is part of the metric, so an attack in ``[0, 1]`` pixel space sees it.
Only the image tower is kept; the text tower is dropped after building.

Weights are data (:mod:`metrics.weights`): each family registers tags for its published
defaults and looks them up read-only, never downloading. Checkpoints load with
``safetensors`` or ``torch.load(weights_only=True)``; OpenAI's original ``.pt`` files are
TorchScript archives, read with ``torch.jit.load`` (TorchScript's own unpickler, which
builds no Python objects) of which only the ``state_dict`` is kept.

This module also holds the small helpers the other pretrained embedding metrics
(:mod:`metrics.dino`, :mod:`metrics.dreamsim`) share: :class:`ImageTransform`,
:func:`cosine_distance`, :func:`load_state_dict_file`, :func:`find_weights` and
:func:`load_on_meta`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from metrics import weights as W
from metrics.base import EmbeddingMetric
from suite.errors import MissingWeightsError, SuiteError
from suite.registry import register_metric

#: OpenAI CLIP's normalisation (also OpenCLIP's default)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
#: ImageNet normalisation (DINO, timm)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------

def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` resized to ``size × size`` (unchanged when it already is).

    Bicubic with ``antialias=True``: PyTorch then uses PIL's kernel (a = −0.5, widened
    when shrinking), i.e. what ``torchvision.transforms.Resize(..., BICUBIC)`` does on
    tensors and PIL does on the images DreamSim and open_clip preprocess. No clamping,
    so the map stays linear and differentiable.
    """
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)


class ImageTransform(nn.Module):
    """``[0, 1]`` images → a network's input: resize to ``size``, centre-crop to ``crop``, normalise.

    ``(resize(x)[crop] − mean) / std`` per channel. The crop takes the central
    ``crop × crop`` window with torchvision's offset ``round((size − crop) / 2)``.
    ``mean``/``std`` are non-persistent buffers (they are options, not weights).
    """

    def __init__(self, size: int, mean: Iterable[float], std: Iterable[float], crop: int | None = None):
        super().__init__()
        self.size = int(size)
        self.crop = None if crop is None or int(crop) >= self.size else int(crop)
        self.register_buffer("mean", torch.tensor(tuple(mean), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(tuple(std), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def output_size(self) -> int:
        return self.crop or self.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = resize_square(x, self.size)
        if self.crop is not None:
            top = int(round((self.size - self.crop) / 2.0))
            x = x[..., top:top + self.crop, top:top + self.crop]
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"size={self.size}, crop={self.crop}"


def cosine_distance(ex: torch.Tensor, ey: torch.Tensor) -> torch.Tensor:
    """``1 − cos∠(ex, ey)`` per row, computed in float64 (small distances keep their digits)."""
    cos = F.cosine_similarity(ex.to(torch.float64), ey.to(torch.float64), dim=1, eps=1e-30)
    return (1 - cos).to(ex.dtype)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") for n in z.namelist())


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, on the CPU, without unpickling arbitrary objects.

    ``.safetensors`` → :func:`safetensors.torch.load_file`; a TorchScript archive (OpenAI's
    CLIP ``.pt``) → ``torch.jit.load(...).state_dict()``; anything else →
    ``torch.load(weights_only=True)``. A ``{"state_dict": ...}`` wrapper is unwrapped and a
    ``module.`` prefix (DDP) dropped; non-tensor entries are discarded.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path), device="cpu")
    elif _is_torchscript(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still the only reader
            sd = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # weights_only refuses pickled objects other than tensors & containers
            raise SuiteError(f"cannot read {path} as a weights-only checkpoint: {err}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise SuiteError(f"{path} holds a {type(sd).__name__}, not a state dict")
    out = {}
    for key, value in sd.items():
        if isinstance(value, torch.Tensor):
            out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


def _float32(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


@contextlib.contextmanager
def quiet_logging():
    """Silence library warnings logged on the root logger (open_clip's "initialized randomly")."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def default_device() -> torch.device:
    """The device ``torch.device(...)`` as a context manager selects (``meta`` inside :func:`load_on_meta`)."""
    getter = getattr(torch, "get_default_device", None)  # torch >= 2.3
    return getter() if getter is not None else torch.device("cpu")


def load_on_meta(build: Callable[[], nn.Module], state_dict: dict[str, torch.Tensor], what: str) -> nn.Module:
    """``build()`` with ``state_dict`` loaded strictly, skipping the random initialisation.

    The module is built on the meta device and the (float32) tensors assigned; should
    anything stay on the meta device (a non-persistent buffer), it is built again on the
    CPU and loaded the ordinary way. A checkpoint that does not fit is a SuiteError.
    """
    state_dict = _float32(state_dict)
    model = None
    try:
        with torch.device("meta"):
            model = build()
    except Exception:  # a builder that cannot run on meta: build normally
        model = None
    if model is not None:
        try:
            model.load_state_dict(state_dict, strict=True, assign=True)
        except RuntimeError as err:
            raise SuiteError(f"{what}: the checkpoint does not fit the architecture: {err}") from None
        if not any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
            return model
    model = build()
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise SuiteError(f"{what}: the checkpoint does not fit the architecture: {err}") from None
    return model


def _alternatives(tag: W.WeightsTag, name: str) -> tuple[W.WeightFile, ...]:
    """The tag's file ``name`` and the other published files holding the same weights."""
    alts = tag.extra.get("alternatives", {})
    return (tag.file(name), *alts.get(name, ()))


def _extra_places(file: W.WeightFile) -> list[Path]:
    """Caches :func:`metrics.weights.candidates` does not know: ``~/.cache/clip`` and a ``.bin`` twin.

    OpenAI's ``clip`` package and open_clip (for URL downloads) cache in ``~/.cache/clip``;
    open_clip's Hugging Face repositories serve ``open_clip_pytorch_model.bin`` beside
    ``open_clip_model.safetensors`` (the same tensors; older open_clip fetched the ``.bin``).
    """
    out: list[Path] = []
    if "openaipublic" in file.url or "mlfoundations/open_clip" in file.url:
        out.append(Path.home() / ".cache" / "clip" / file.name)
    if file.hf_repo and file.name == "open_clip_model.safetensors":
        repo = W.hf_hub_folder() / ("models--" + file.hf_repo.replace("/", "--")) / "snapshots"
        found = sorted(repo.glob("*/open_clip_pytorch_model.bin")) if repo.is_dir() else []
        out.extend(found or [repo / "<revision>" / "open_clip_pytorch_model.bin"])
    return out


def find_weights(tag: str | W.WeightsTag, name: str | None = None, explicit: str | Path | None = None,
                 *, fall_back: bool = False) -> Path:
    """The path of file ``name`` of ``tag`` (or of a file with the same weights); read-only, no network.

    With ``explicit`` (the metric's ``weights=`` option): a file is taken as it is when the
    tag has one file; a folder is searched for the file (and its alternatives) by name, and
    for files torch hub caches also under ``checkpoints/`` (DreamSim's hub folder). Only
    that path is looked at unless ``fall_back`` (then the usual places follow). Without it:
    every place of :func:`metrics.weights.candidates`, for the file and then for each
    alternative, plus :func:`_extra_places`. Missing everywhere: MissingWeightsError naming
    the file and every place looked at.
    """
    tag = W.get_tag(tag) if isinstance(tag, str) else tag
    if name is None:
        if len(tag.files) != 1:
            raise SuiteError(f"weights {tag.tag!r} have {len(tag.files)} files; name one")
        name = tag.files[0].name
    files = _alternatives(tag, name)
    places: list[Path] = []
    if explicit is not None:
        p = Path(explicit).expanduser()
        if p.is_file() and len(tag.files) == 1:
            return p
        for f in files:
            inside = [p / f.name] + ([p / "checkpoints" / f.name] if f.torch_hub else [])
            for c in inside:
                places.append(c)
                if c.is_file():
                    return c
        if not fall_back:
            raise MissingWeightsError(tag.tag, name, [str(c) for c in places])
    for f in files:
        for c in [*W.candidates(tag, f), *_extra_places(f)]:
            places.append(c)
            if c.is_file():
                return c
    raise MissingWeightsError(tag.tag, name, [str(c) for c in dict.fromkeys(places)])


def random_requested(weights, pretrained: bool, name: str) -> bool:
    """``True`` for random weights; ``weights=`` with ``pretrained=False`` is a contradiction."""
    if not pretrained and weights is not None:
        raise SuiteError(f"{name}: weights={str(weights)!r} and pretrained=False contradict each other; "
                         "pretrained=False means random weights")
    return not pretrained


# --------------------------------------------------------------------------------------
# weight tags
# --------------------------------------------------------------------------------------

_CLIP_PAPER = "Radford et al. 2021, Learning Transferable Visual Models From Natural Language Supervision (ICML)"
_OPENCLIP_PAPER = ("Cherti et al. 2023, Reproducible scaling laws for contrastive language-image learning (CVPR); "
                   "weights by LAION (Schuhmann et al. 2021/2022)")
_RCLIP_PAPER = ("Croce, Schlarmann, Singh, Hein 2024, Adversarially Robust CLIP Models Induce Better (Robust) "
                "Perceptual Metrics (ICML 2024 workshop; SaTML 2025)")
_ROBUSTVLM_PAPER = ("Schlarmann, Singh, Croce, Hein 2024, Robust CLIP: Unsupervised Adversarial Fine-Tuning of "
                    "Vision Embeddings for Robust Large Vision-Language Models (ICML)")
_HF = "https://huggingface.co/{repo}/resolve/main/{name}"
_SAFE = "open_clip_model.safetensors"


def _hf_file(repo: str, name: str = _SAFE, sha256: str | None = None) -> W.WeightFile:
    return W.WeightFile(name, _HF.format(repo=repo, name=name), sha256=sha256, hf_repo=repo)


# OpenAI CLIP: file and sha256 (OpenAI's URL embeds the file's sha256) as open_clip's
# pretrained table lists them; the Hugging Face mirror is open_clip's own download source.
_OPENAI = {
    "RN50": ("afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", "RN50.pt",
             "timm/resnet50_clip.openai"),
    "RN101": ("8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599", "RN101.pt",
              "timm/resnet101_clip.openai"),
    "RN50x4": ("7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd", "RN50x4.pt",
               "timm/resnet50x4_clip.openai"),
    "RN50x16": ("52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa", "RN50x16.pt",
                "timm/resnet50x16_clip.openai"),
    "RN50x64": ("be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c", "RN50x64.pt",
                "timm/resnet50x64_clip.openai"),
    "ViT-B-32": ("40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32.pt",
                 "timm/vit_base_patch32_clip_224.openai"),
    "ViT-B-16": ("5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "ViT-B-16.pt",
                 "timm/vit_base_patch16_clip_224.openai"),
    "ViT-L-14": ("b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "ViT-L-14.pt",
                 "timm/vit_large_patch14_clip_224.openai"),
    "ViT-L-14-336": ("3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02", "ViT-L-14-336px.pt",
                     "timm/vit_large_patch14_clip_336.openai"),
}

#: ``clip`` arch → weights tag
CLIP_TAGS: dict[str, str] = {}
for _arch, (_sha, _file, _mirror) in _OPENAI.items():
    CLIP_TAGS[_arch] = f"clip-{_arch.lower()}"
    W.register_tag(W.WeightsTag(
        tag=CLIP_TAGS[_arch], metric="clip",
        files=(W.WeightFile(_file, f"https://openaipublic.azureedge.net/clip/models/{_sha}/{_file}", sha256=_sha),),
        paper=_CLIP_PAPER,
        description=f"OpenAI CLIP {_arch} (TorchScript archive, fp16; QuickGELU)",
        extra={"arch": _arch, "quick_gelu": True, "mean": OPENAI_MEAN, "std": OPENAI_STD,
               "alternatives": {_file: (_hf_file(_mirror),)}},
    ))

_OPEN_CLIP = [
    # tag, arch, primary file, alternatives, description
    ("open-clip-vit-b-32-laion2b-s34b-b79k", "ViT-B-32", _hf_file("laion/CLIP-ViT-B-32-laion2B-s34B-b79K"), (),
     "OpenCLIP ViT-B/32 trained on LAION-2B (open_clip tag laion2b_s34b_b79k)"),
    ("open-clip-vit-b-16-laion2b-s34b-b88k", "ViT-B-16", _hf_file("laion/CLIP-ViT-B-16-laion2B-s34B-b88K"), (),
     "OpenCLIP ViT-B/16 trained on LAION-2B (open_clip tag laion2b_s34b_b88k; the base of R-CLIP ViT-B/16)"),
    ("open-clip-vit-b-16-laion400m-e31", "ViT-B-16",
     W.WeightFile("vit_b_16-laion400m_e31-00efa78f.pt",
                  "https://github.com/mlfoundations/open_clip/releases/download/v0.2-weights/"
                  "vit_b_16-laion400m_e31-00efa78f.pt", sha256="00efa78f"),
     (_hf_file("timm/vit_base_patch16_clip_224.laion400m_e31"),),
     "OpenCLIP ViT-B/16 trained on LAION-400M, epoch 31 (open_clip tag laion400m_e31; DreamSim's OpenCLIP)"),
    ("open-clip-convnext-base-w-laion2b-s13b-b82k-augreg", "convnext_base_w",
     _hf_file("laion/CLIP-convnext_base_w-laion2B-s13B-b82K-augreg"), (),
     "OpenCLIP ConvNeXt-B (wide) trained on LAION-2B at 256 px (open_clip tag laion2b_s13b_b82k_augreg)"),
]
for _tag, _arch, _file, _alts, _desc in _OPEN_CLIP:
    W.register_tag(W.WeightsTag(
        tag=_tag, metric="open_clip", files=(_file,), paper=_OPENCLIP_PAPER, description=_desc,
        extra={"arch": _arch, "mean": OPENAI_MEAN, "std": OPENAI_STD,
               **({"alternatives": {_file.name: _alts}} if _alts else {})},
    ))

#: ``open_clip`` arch → default weights tag
OPEN_CLIP_DEFAULTS = {
    "ViT-B-32": "open-clip-vit-b-32-laion2b-s34b-b79k",
    "ViT-B-16": "open-clip-vit-b-16-laion2b-s34b-b88k",
    "convnext_base_w": "open-clip-convnext-base-w-laion2b-s13b-b82k-augreg",
}

# Robust CLIP. ViT-B/16 and ConvNeXt-B (Croce et al. 2024): FARE and TeCoA at ε = 4/255,
# published on Hugging Face (collection chs20/perceptual-metrics) as full open_clip models
# and on Tübingen's Nextcloud as image-tower state dicts (file names from the paper's
# repository fra31/perceptual-metrics). The paper evaluates ConvNeXt-B through open_clip's
# 256 px preprocessing with the centre crop set to 224 and every model with OpenAI's
# mean/std; ViT-L/14 (Schlarmann et al. 2024) are fine-tuned OpenAI CLIP: QuickGELU.
_NC = "https://nc.mlcloud.uni-tuebingen.de/index.php/s/{}"
_R_CLIP = [
    # variant, arch, hf repo, sha256 of open_clip_model.safetensors, nextcloud (file, share), paper, extra
    ("vit-b-16-fare", "ViT-B-16", "chs20/FARE4-ViT-B-16-laion2B-s34B-b88K", None,
     ("vit-b-16-fare-eps4.pt", "fg7JHQzASiNnxCg"), _RCLIP_PAPER, {}),
    ("vit-b-16-tecoa", "ViT-B-16", "chs20/TeCoA4-ViT-B-16-laion2B-s34B-b88K",
     "e687adcdbcc9694947b6bf590d768cf667eddf04a5800c511fa4ffded4c48510",
     ("vit-b-16-tecoa-eps4.pt", "ZBkmbMrAwgfeeSa"), _RCLIP_PAPER, {}),
    ("convnext_base_w-fare", "convnext_base_w", "chs20/FARE4-convnext_base_w-laion2B-s13B-b82K-augreg", None,
     ("convnext_base_w-fare-eps4.pt", "GCPXBDEE5PoCngy"), _RCLIP_PAPER, {"image_size": 256, "crop": 224}),
    ("convnext_base_w-tecoa", "convnext_base_w", "chs20/TeCoA4-convnext_base_w-laion2B-s13B-b82K-augreg", None,
     ("convnext_base_w-tecoa-eps4.pt", "zHKCC9aS7rf4qCt"), _RCLIP_PAPER, {"image_size": 256, "crop": 224}),
    ("vit-l-14-fare2", "ViT-L-14", "chs20/fare2-clip", None, None, _ROBUSTVLM_PAPER, {"quick_gelu": True}),
    ("vit-l-14-fare4", "ViT-L-14", "chs20/fare4-clip", None, None, _ROBUSTVLM_PAPER, {"quick_gelu": True}),
    ("vit-l-14-tecoa2", "ViT-L-14", "chs20/tecoa2-clip", None, None, _ROBUSTVLM_PAPER, {"quick_gelu": True}),
    ("vit-l-14-tecoa4", "ViT-L-14", "chs20/tecoa4-clip", None, None, _ROBUSTVLM_PAPER, {"quick_gelu": True}),
]
#: ``r-clip`` variant → weights tag
R_CLIP_TAGS: dict[str, str] = {}
for _variant, _arch, _repo, _sha, _nc, _paper, _extra in _R_CLIP:
    R_CLIP_TAGS[_variant] = f"r-clip-{_variant}"
    _primary = _hf_file(_repo, sha256=_sha)
    _alts = {_primary.name: (W.WeightFile(_nc[0], _NC.format(_nc[1])),)} if _nc else {}
    _method, _eps = ("FARE" if "fare" in _variant else "TeCoA"), ("2/255" if _variant.endswith("2") else "4/255")
    W.register_tag(W.WeightsTag(
        tag=R_CLIP_TAGS[_variant], metric="r-clip", files=(_primary,), paper=_paper,
        description=f"robust CLIP {_arch}, {_method} adversarial fine-tuning at ℓ∞ ε = {_eps}",
        extra={"arch": _arch, "mean": OPENAI_MEAN, "std": OPENAI_STD, **_extra,
               **({"alternatives": _alts} if _alts else {})},
    ))


# --------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------

def _arch_normalisation(arch: str, visual: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean/std for ``arch`` when no weights tag states them.

    The one pair all of open_clip's published weights for ``arch`` agree on (SigLIP's 0.5,
    CLIPA's ImageNet statistics, ...), else the model's own preprocess config (OpenAI's).
    """
    import open_clip

    pairs = set()
    for t in open_clip.list_pretrained_tags_by_model(arch):
        cfg = open_clip.get_pretrained_cfg(arch, t) or {}
        if "mean" in cfg and "std" in cfg:
            pairs.add((tuple(cfg["mean"]), tuple(cfg["std"])))
    if len(pairs) == 1:
        return pairs.pop()
    cfg = getattr(visual, "preprocess_cfg", {}) or {}
    return tuple(cfg.get("mean", OPENAI_MEAN)), tuple(cfg.get("std", OPENAI_STD))


def visual_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image tower's tensors: ``visual.*`` of a full CLIP checkpoint, or the whole dict if it has none.

    Full open_clip/OpenAI checkpoints prefix the image tower with ``visual.``; the
    image-tower state dicts of the R-CLIP Nextcloud release have no prefix.
    """
    visual = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    return visual or sd


class _CLIPTower(EmbeddingMetric):
    """Shared machinery: build an open_clip image tower, load weights, embed through :class:`ImageTransform`."""

    family = "open_clip"

    def _setup(self, *, arch: str, weights, pretrained: bool, tag: str | None, seed: int,
               image_size: int | None = None, quick_gelu: bool | None = None) -> None:
        import open_clip

        self.random_weights = random_requested(weights, pretrained, self.family)
        wtag = W.get_tag(tag) if tag is not None else None
        if wtag is not None and wtag.extra.get("arch") != arch:
            raise SuiteError(f"{self.family}: weights tag {wtag.tag!r} is for arch {wtag.extra.get('arch')!r}, "
                             f"not {arch!r}")
        if arch not in open_clip.list_models():
            raise SuiteError(f"{self.family}: unknown open_clip architecture {arch!r} "
                             "(open_clip.list_models() lists them)")
        extra = wtag.extra if wtag is not None else {}
        if quick_gelu is None:
            quick_gelu = bool(extra.get("quick_gelu", False))

        def build() -> nn.Module:
            with quiet_logging():
                model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu,
                                               device=default_device())
            return model.visual

        path = None
        if self.random_weights:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                visual = build()
        else:
            if wtag is None and weights is None:
                raise SuiteError(f"{self.family}: no published weights are registered for arch {arch!r}; pass "
                                 "weights=FILE (an open_clip/OpenAI checkpoint or an image-tower state dict), "
                                 "a weights tag, or pretrained=False for random weights")
            path = find_weights(wtag, explicit=weights) if wtag is not None else Path(weights).expanduser()
            if not path.is_file():
                raise SuiteError(f"{self.family}: the weights file {path} does not exist")
            visual = load_on_meta(build, visual_state_dict(load_state_dict_file(path)),
                                  f"{self.family} {arch} from {path}")
        visual.eval().requires_grad_(False)
        self.visual = visual
        self.arch, self.quick_gelu = arch, quick_gelu
        self.weights = None if weights is None else str(weights)
        self.weights_path = None if path is None else str(path)
        if "mean" in extra:
            mean, std = extra["mean"], extra["std"]
        else:
            mean, std = _arch_normalisation(arch, visual)
        native = getattr(visual, "preprocess_cfg", {}).get("size", getattr(visual, "image_size", 224))
        native = native[0] if isinstance(native, (tuple, list)) else native
        size = int(image_size or extra.get("image_size") or native)
        self.transform = ImageTransform(size, mean, std, crop=extra.get("crop"))
        self.input_size = self.transform.output_size
        self.eval()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``visual(T(x))``: the tower's (unnormalised) image embedding of ``[0, 1]`` images."""
        self.check_images(x)
        return self.visual(self.transform(x))

    def compare(self, ex: torch.Tensor, ey: torch.Tensor) -> torch.Tensor:
        """``1 − cos∠(ex, ey)`` in float64."""
        return cosine_distance(ex, ey)


@register_metric("open_clip", aliases=("openclip",))
class OpenCLIPMetric(_CLIPTower):
    """OpenCLIP image embeddings (Cherti et al. 2023): 1 − cos of ``encode_image``, any open_clip architecture.

    ``d(x, y) = 1 − cos∠(f(T(x)), f(T(y)))`` with ``f`` the image tower and ``T`` the
    resize/normalisation of the weights (module docstring).

    Args:
        arch: an open_clip architecture (``open_clip.list_models()``); names ending in
            ``-quickgelu`` use QuickGELU (needed for weights trained with it, e.g. the
            LAION-400M ViT-B/32).
        weights: a checkpoint file (a full open_clip or OpenAI model, or an image-tower
            state dict; safetensors, weights-only pickle or TorchScript), or a folder holding
            the tag's file.
        pretrained: ``False`` = random weights (drawn with ``seed``); only when asked.
        tag: a weights tag (``lipsim weights``) of this arch; default: the arch's default
            (ViT-B-32 → LAION-2B ``laion2b_s34b_b79k``; ViT-B-16 → ``laion2b_s34b_b88k``;
            convnext_base_w → ``laion2b_s13b_b82k_augreg``), none for other archs
            (pass ``weights=``).
        image_size: the tower's input side (default: the tag's, else the architecture's).
        seed: seed of the random weights.

    mean/std: the tag's, else the one pair all of open_clip's published weights of the
    arch share, else OpenAI's.
    """

    family = "open_clip"

    def __init__(self, arch: str = "ViT-B-32", weights: str | Path | None = None, pretrained: bool = True,
                 tag: str | None = None, image_size: int | None = None, seed: int = 0):
        super().__init__()
        if tag is None and weights is None and pretrained:
            tag = OPEN_CLIP_DEFAULTS.get(arch)
        if tag is not None and W.get_tag(tag).metric not in ("open_clip", "r-clip", "clip"):
            raise SuiteError(f"open_clip: weights tag {tag!r} belongs to metric {W.get_tag(tag).metric!r}")
        self._setup(arch=arch, weights=weights, pretrained=pretrained, tag=tag, seed=seed, image_size=image_size)


@register_metric("clip")
class CLIPMetric(_CLIPTower):
    """OpenAI CLIP image embeddings (Radford et al. 2021): 1 − cos of ``encode_image``.

    Built through open_clip with QuickGELU (OpenAI's activation), OpenAI's mean/std and
    the architecture's input size (224, 336 for ViT-L-14-336, 288/384/448 for RN50x4/16/64).

    Args:
        arch: one of OpenAI's models: ``RN50``, ``RN101``, ``RN50x4``, ``RN50x16``,
            ``RN50x64``, ``ViT-B-32`` (default), ``ViT-B-16``, ``ViT-L-14``, ``ViT-L-14-336``.
        weights: OpenAI's ``<arch>.pt`` (TorchScript), open_clip's converted
            ``open_clip_model.safetensors``, or any state dict of the same model; or a folder.
            Default: the tag ``clip-<arch>`` looked up in the suite's folder,
            ``~/.cache/clip`` and the Hugging Face cache of ``timm/*_clip_*.openai``.
        pretrained: ``False`` = random weights (drawn with ``seed``); only when asked.
        seed: seed of the random weights.
    """

    family = "clip"

    def __init__(self, arch: str = "ViT-B-32", weights: str | Path | None = None, pretrained: bool = True,
                 seed: int = 0):
        super().__init__()
        if arch not in CLIP_TAGS and weights is None and pretrained:
            raise SuiteError(f"clip: OpenAI published no {arch!r}; choose one of {', '.join(CLIP_TAGS)}")
        self._setup(arch=arch, weights=weights, pretrained=pretrained, tag=CLIP_TAGS.get(arch), seed=seed,
                    quick_gelu=True)


@register_metric("r-clip", aliases=("rclip", "robust-clip"))
class RobustCLIPMetric(_CLIPTower):
    """Robust CLIP (R-CLIP; Croce et al. 2024, Schlarmann et al. 2024): 1 − cos of an adversarially fine-tuned tower.

    FARE (unsupervised embedding-matching) or TeCoA (supervised) adversarial fine-tuning
    of CLIP image towers at ℓ∞ ε = 4/255 (ViT-L/14: 2/255 and 4/255). As zero-shot
    perceptual metrics they are the robust baselines of Croce et al.: same distance as
    ``open_clip``, with the paper's preprocessing (OpenAI mean/std; ConvNeXt-B resized to
    256 and centre-cropped to 224).

    Args:
        variant: ``vit-b-16-fare``, ``vit-b-16-tecoa``, ``convnext_base_w-fare``,
            ``convnext_base_w-tecoa`` (default; the paper's R-CLIP_T), ``vit-l-14-fare2``,
            ``vit-l-14-fare4``, ``vit-l-14-tecoa2``, ``vit-l-14-tecoa4``.
        weights: the Hugging Face ``open_clip_model.safetensors`` (or ``.bin``), the
            Nextcloud image-tower ``*-eps4.pt``, or a folder holding one of them.
        pretrained: ``False`` = random weights of the variant's architecture.
        seed: seed of the random weights.
    """

    family = "r-clip"

    def __init__(self, variant: str = "convnext_base_w-tecoa", weights: str | Path | None = None,
                 pretrained: bool = True, seed: int = 0):
        super().__init__()
        if variant not in R_CLIP_TAGS:
            raise SuiteError(f"r-clip: unknown variant {variant!r}; choose one of {', '.join(R_CLIP_TAGS)}")
        tag = R_CLIP_TAGS[variant]
        self.variant = variant
        self._setup(arch=W.get_tag(tag).extra["arch"], weights=weights, pretrained=pretrained, tag=tag, seed=seed)


__all__ = ["CLIPMetric", "CLIP_TAGS", "IMAGENET_MEAN", "IMAGENET_STD", "ImageTransform", "OPENAI_MEAN", "OPENAI_STD",
           "OPEN_CLIP_DEFAULTS", "OpenCLIPMetric", "R_CLIP_TAGS", "RobustCLIPMetric", "cosine_distance",
           "default_device", "find_weights", "load_on_meta", "load_state_dict_file", "quiet_logging",
           "random_requested", "resize_square", "visual_state_dict"]
