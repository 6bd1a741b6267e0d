"""The ``dreamsim`` metric (Fu et al., NeurIPS 2023), rebuilt on timm and open_clip from DreamSim's released files.

DreamSim embeds an image with pretrained ViTs fine-tuned on NIGHTS with LoRA, and
compares embeddings by cosine distance. The ensemble (the default) concatenates

* DINO ViT-B/16: the CLS token after the last block, *before* the final LayerNorm (768);
* OpenAI CLIP ViT-B/16: the projected embedding ``ln_post(cls) @ proj`` (512), QuickGELU;
* OpenCLIP ViT-B/16 (LAION-400M): the projected embedding (512), plain GELU

(each after its own ``(x − mean)/std``: ImageNet statistics for DINO, OpenAI's for both
CLIPs, as DreamSim 0.2.1 does), into ``e ∈ ℝ¹⁷⁹²``, then centres and normalises it
(``normalize_embeds=True``)::

    ê = (e − mean_i e_i) / ‖e − mean_i e_i‖₂,      d(x, y) = 1 − cos∠(ê(x), ê(y)).

The images in ``[0, 1]`` are first resized to 224 × 224 (PIL-style bicubic, as DreamSim's
preprocessing does with PIL), inside the metric. ``branch`` selects DreamSim's single-model
variants instead: ``dino`` (DINO ViT-B/16 CLS), ``clip`` (OpenAI CLIP ViT-B/32) and
``open_clip`` (OpenCLIP ViT-B/32 LAION-400M, run with plain GELU as DreamSim runs it).

Weights, in DreamSim's released layout (its ``./models`` folder, the unpacked release zip):

* ``clip_vitb16_pretrain.pth.tar``, ``open_clip_vitb16_pretrain.pth.tar`` (``{"state_dict": ...}``
  in the layout of DINO's ViT code with ``pos_drop`` holding CLIP's ``ln_pre`` and ``proj``
  the projection); they are mapped onto open_clip's names, a nonzero patch-embedding bias
  folded into the position embeddings of the patch tokens (exact: it is added to every
  patch token and to no class token);
* the DINO backbone is DINO's torch hub checkpoint ``dino_vitbase16_pretrain.pth`` (DreamSim
  loads it with ``torch.hub.load``; it lands in ``<models>/checkpoints``); timm's
  ``model.safetensors`` of ``vit_base_patch16_224.dino`` holds the same tensors.
  (``dino_vitb16_pretrain.pth`` of the release only feeds DINO's projection head, which
  the CLS feature does not use.)
* ``ensemble_lora/adapter_config.json`` and ``adapter_model.bin`` (or ``.safetensors``):
  LoRA adapters (Hu et al. 2022) on every attention ``qkv``. They are merged into the
  weights without peft: ``W ← W + (α/r)·B·A`` (``α/√r`` with ``use_rslora``), ``α`` and
  ``r`` from ``adapter_config.json``; dropout is the identity at evaluation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from metrics import weights as W
from metrics.base import EmbeddingMetric
from metrics.clip import (IMAGENET_MEAN, IMAGENET_STD, OPENAI_MEAN, OPENAI_STD, cosine_distance, default_device,
                          find_weights, load_on_meta, load_state_dict_file, quiet_logging, random_requested,
                          resize_square)
from metrics.dino import DINO_HUB_FILE, DINO_TAG, build_dino_vit, cls_token
from suite.errors import MissingWeightsError, SuiteError
from suite.registry import register_metric

_RELEASE = "https://github.com/ssundaram21/dreamsim/releases/download/{}-checkpoints/dreamsim_{}_checkpoint.zip"
_PAPER = ("Fu, Tamir, Sundaram, Chai, Zhang, Dekel, Isola 2023, DreamSim: Learning New Dimensions of Human "
          "Visual Similarity using Synthetic Data (NeurIPS)")

#: backbone → (kind, patch size, checkpoint file in DreamSim's folder or None for DINO's hub file)
BACKBONES = {
    "dino_vitb16": ("dino", 16, None),
    "clip_vitb16": ("clip", 16, "clip_vitb16_pretrain.pth.tar"),
    "open_clip_vitb16": ("open_clip", 16, "open_clip_vitb16_pretrain.pth.tar"),
    "clip_vitb32": ("clip", 32, "clip_vitb32_pretrain.pth.tar"),
    "open_clip_vitb32": ("open_clip", 32, "open_clip_vitb32_pretrain.pth.tar"),
}
#: branch option → (weights tag, backbones in DreamSim's order, LoRA folder, release zip)
BRANCHES = {
    "ensemble": ("dreamsim-ensemble", ("dino_vitb16", "clip_vitb16", "open_clip_vitb16"), "ensemble_lora",
                 _RELEASE.format("v0.2.0", "ensemble")),
    "dino": ("dreamsim-dino-vitb16", ("dino_vitb16",), "dino_vitb16_single_lora",
             _RELEASE.format("v0.2.0", "dino_vitb16")),
    "clip": ("dreamsim-clip-vitb32", ("clip_vitb32",), "clip_vitb32_single_lora",
             _RELEASE.format("v0.2.0", "clip_vitb32")),
    "open_clip": ("dreamsim-open-clip-vitb32", ("open_clip_vitb32",), "open_clip_vitb32_single_lora",
                  _RELEASE.format("v0.2.0", "open_clip_vitb32")),
}
_MEAN_STD = {"dino": (IMAGENET_MEAN, IMAGENET_STD), "clip": (OPENAI_MEAN, OPENAI_STD),
             "open_clip": (OPENAI_MEAN, OPENAI_STD)}

for _branch, (_tag, _backbones, _lora, _zip) in BRANCHES.items():
    _files, _alts = [], {}
    for _b in _backbones:
        _file = BACKBONES[_b][2]
        if _file is None:
            _files.append(DINO_HUB_FILE)
            _alts[DINO_HUB_FILE.name] = DINO_TAG.files
        else:
            _files.append(W.WeightFile(_file, _zip, dreamsim=_file))
    for _name in ("adapter_config.json", "adapter_model.bin"):
        _files.append(W.WeightFile(f"{_lora}/{_name}", _zip, dreamsim=f"{_lora}/{_name}"))
    _alts[f"{_lora}/adapter_model.bin"] = (W.WeightFile(f"{_lora}/adapter_model.safetensors", _zip,
                                                        dreamsim=f"{_lora}/adapter_model.safetensors"),)
    W.register_tag(W.WeightsTag(
        tag=_tag, metric="dreamsim", files=tuple(_files), paper=_PAPER,
        description=f"DreamSim {_branch} ({', '.join(_backbones)}) with its NIGHTS LoRA; the DINO backbone is "
                    "DINO's torch hub checkpoint, the other files are in the release zip",
        extra={"branch": _branch, "lora": _lora, "alternatives": _alts},
    ))


# --------------------------------------------------------------------------------------
# checkpoint conversion and LoRA
# --------------------------------------------------------------------------------------

_BLOCK_NAMES = {
    "norm1.weight": "ln_1.weight", "norm1.bias": "ln_1.bias",
    "attn.qkv.weight": "attn.in_proj_weight", "attn.qkv.bias": "attn.in_proj_bias",
    "attn.proj.weight": "attn.out_proj.weight", "attn.proj.bias": "attn.out_proj.bias",
    "norm2.weight": "ln_2.weight", "norm2.bias": "ln_2.bias",
    "mlp.fc1.weight": "mlp.c_fc.weight", "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight", "mlp.fc2.bias": "mlp.c_proj.bias",
}


def dino_layout_to_open_clip(sd: dict[str, torch.Tensor], what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """A CLIP image tower saved in DINO's ViT layout (DreamSim's ``*_pretrain.pth.tar``) → open_clip names.

    ``cls_token → class_embedding``, ``pos_embed → positional_embedding``,
    ``patch_embed.proj → conv1`` (open_clip's has no bias: a bias ``b`` is added to the
    position embeddings of the patch tokens, ``pos[1:] += b``, which gives the same
    tokens), ``pos_drop → ln_pre``, ``blocks.i.{norm1, attn.qkv, attn.proj, norm2,
    mlp.fc1, mlp.fc2} → transformer.resblocks.i.{ln_1, attn.in_proj, attn.out_proj, ln_2,
    mlp.c_fc, mlp.c_proj}``, ``norm → ln_post``, ``proj → proj``.
    """
    rest = dict(sd)
    try:
        width = rest["cls_token"].numel()
        out = {
            "class_embedding": rest.pop("cls_token").reshape(width),
            "positional_embedding": rest.pop("pos_embed").reshape(-1, width).clone(),
            "conv1.weight": rest.pop("patch_embed.proj.weight"),
            "ln_pre.weight": rest.pop("pos_drop.weight"), "ln_pre.bias": rest.pop("pos_drop.bias"),
            "ln_post.weight": rest.pop("norm.weight"), "ln_post.bias": rest.pop("norm.bias"),
            "proj": rest.pop("proj"),
        }
    except KeyError as err:
        raise SuiteError(f"{what}: not a CLIP tower in DreamSim's layout (no {err.args[0]!r})") from None
    bias = rest.pop("patch_embed.proj.bias", None)
    if bias is not None:
        out["positional_embedding"][1:] += bias.to(out["positional_embedding"].dtype)
    for key in list(rest):
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if m and m.group(2) in _BLOCK_NAMES:
            out[f"transformer.resblocks.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}"] = rest.pop(key)
    if rest:
        raise SuiteError(f"{what}: unexpected tensors {sorted(rest)[:5]}")
    return out


_LORA_KEY = re.compile(r"(?:^|\.)extractor_list\.(\d+)\.model\.blocks\.(\d+)\.attn\.qkv\.lora_([AB])(?:\.[^.]+)?"
                       r"\.weight$")


def lora_deltas(config: dict, tensors: dict[str, torch.Tensor], what: str = "LoRA adapter"
                ) -> dict[tuple[int, int], torch.Tensor]:
    """``{(extractor, block): ΔW}`` with ``ΔW = s·B·A`` for every LoRA pair on ``...blocks.<block>.attn.qkv``.

    ``s = lora_alpha / r`` (``lora_alpha / √r`` with ``use_rslora``), read from peft's
    ``adapter_config.json``; the product is taken in float64. Adapters that change more
    than the ``qkv`` weights (biases, DoRA, per-module ranks) are refused.
    """
    targets = config.get("target_modules")
    targets = [targets] if isinstance(targets, str) else list(targets or [])
    if config.get("peft_type", "LORA") != "LORA" or targets != ["qkv"]:
        raise SuiteError(f"{what}: expected a LoRA adapter on 'qkv'; got peft_type={config.get('peft_type')!r}, "
                         f"target_modules={targets}")
    if config.get("bias", "none") != "none" or config.get("use_dora") or config.get("rank_pattern") \
            or config.get("alpha_pattern") or config.get("fan_in_fan_out"):
        raise SuiteError(f"{what}: only plain LoRA (bias='none', no DoRA, no per-module ranks) can be merged")
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / (r ** 0.5 if config.get("use_rslora") else r)
    pairs: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        m = _LORA_KEY.search(key)
        if m is None:
            raise SuiteError(f"{what}: unexpected tensor {key!r}")
        pairs.setdefault((int(m.group(1)), int(m.group(2))), {})[m.group(3)] = value
    deltas = {}
    for where, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"} or ab["A"].shape[0] != r or ab["B"].shape[1] != r:
            raise SuiteError(f"{what}: extractor {where[0]} block {where[1]}: expected lora_A (r={r}, in) and "
                             f"lora_B (out, r={r}); got { {k: tuple(v.shape) for k, v in ab.items()} }")
        deltas[where] = (scale * (ab["B"].double() @ ab["A"].double())).float()
    return deltas


def read_lora(config_path: Path, weights_path: Path) -> dict[tuple[int, int], torch.Tensor]:
    """The merged-weight deltas of a peft LoRA folder (see :func:`lora_deltas`)."""
    config = json.loads(Path(config_path).read_text())
    return lora_deltas(config, load_state_dict_file(weights_path), f"LoRA adapter {weights_path}")


def _merge(sd: dict[str, torch.Tensor], deltas: dict[int, torch.Tensor], key: str, what: str) -> None:
    for block, delta in deltas.items():
        name = key.format(block)
        if name not in sd or sd[name].shape != delta.shape:
            raise SuiteError(f"{what}: LoRA for block {block} does not fit {name!r}")
        sd[name] = sd[name].float() + delta


# --------------------------------------------------------------------------------------
# the metric
# --------------------------------------------------------------------------------------

class DreamSimBackbone(nn.Module):
    """One DreamSim backbone: ``(x − mean)/std`` then its feature (DINO: pre-norm CLS; CLIPs: projection)."""

    def __init__(self, kind: str, net: nn.Module):
        super().__init__()
        self.kind, self.net = kind, net
        mean, std = _MEAN_STD[kind]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if self.kind == "dino":
            return cls_token(self.net, z, final_norm=False)
        return self.net(z)


def _find_dino(tag: W.WeightsTag, weights) -> Path:
    """DINO's backbone: in the DreamSim folder, under this tag, then wherever the ``dino`` metric finds it."""
    try:
        return find_weights(tag, DINO_HUB_FILE.name, weights, fall_back=True)
    except MissingWeightsError as err:
        try:
            return find_weights(DINO_TAG)
        except MissingWeightsError as more:
            raise MissingWeightsError(err.tag, err.file, list(dict.fromkeys(err.places + more.places))) from None


def _open_clip_builder(patch: int, quick_gelu: bool):
    def build() -> nn.Module:
        import open_clip

        with quiet_logging():
            model = open_clip.create_model(f"ViT-B-{patch}", pretrained=None, force_quick_gelu=quick_gelu,
                                           device=default_device())
        return model.visual

    return build


@register_metric("dreamsim")
class DreamSimMetric(EmbeddingMetric):
    """DreamSim (Fu et al. 2023): 1 − cos of centred, normalised DINO + CLIP + OpenCLIP ViT-B/16 embeddings.

    See the module docstring for the embedding and the files. Rebuilt on timm (DINO) and
    open_clip (both CLIPs); LoRA merged at load time, no peft needed.

    Args:
        weights: DreamSim's checkpoint folder (its ``./models``, the unpacked release zip);
            default: the tag ``dreamsim-<branch>`` (suite folder, ``./models``, and for the
            DINO backbone the torch hub and Hugging Face caches). DINO's hub checkpoint is
            also looked for in ``<weights>/checkpoints`` and then in those caches.
        branch: ``ensemble`` (default), or a single-model DreamSim: ``dino`` (ViT-B/16),
            ``clip`` (OpenAI ViT-B/32), ``open_clip`` (LAION-400M ViT-B/32).
        finetuned: merge the NIGHTS LoRA adapters (default); ``False`` = the pretrained
            backbones alone (DreamSim's ``dreamsim(pretrained=False)``; no adapter needed).
        pretrained: ``False`` = random backbone weights drawn with ``seed`` (benchmarks, tests).
        seed: seed of the random weights.
    """

    input_size = 224

    def __init__(self, weights: str | Path | None = None, branch: str = "ensemble", finetuned: bool = True,
                 pretrained: bool = True, seed: int = 0):
        super().__init__()
        if branch not in BRANCHES:
            raise SuiteError(f"dreamsim: unknown branch {branch!r}; choose one of {', '.join(BRANCHES)}")
        self.random_weights = random_requested(weights, pretrained, "dreamsim")
        tag_name, backbones, lora, _ = BRANCHES[branch]
        tag = W.get_tag(tag_name)
        self.branch, self.finetuned = branch, bool(finetuned) and not self.random_weights
        self.weights = None if weights is None else str(weights)

        # every file first, so that a missing one is reported before anything is built
        paths: dict[str, Path] = {}
        if not self.random_weights:
            for b in backbones:
                if BACKBONES[b][2] is None:
                    paths[b] = _find_dino(tag, weights)
                else:
                    paths[b] = find_weights(tag, BACKBONES[b][2], weights)
            if self.finetuned:
                paths["lora_config"] = find_weights(tag, f"{lora}/adapter_config.json", weights)
                paths["lora_weights"] = find_weights(tag, f"{lora}/adapter_model.bin", weights)
        self.weights_paths = {k: str(v) for k, v in paths.items()}
        deltas: dict[tuple[int, int], torch.Tensor] = {}
        if self.finetuned:
            deltas = read_lora(paths["lora_config"], paths["lora_weights"])
            unknown = sorted({i for i, _ in deltas} - set(range(len(backbones))))
            if unknown:
                raise SuiteError(f"dreamsim {branch}: the LoRA adapter names extractors {unknown}; "
                                 f"this branch has {len(backbones)}")

        nets = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            for index, b in enumerate(backbones):
                kind, patch, _ = BACKBONES[b]
                mine = {blk: d for (i, blk), d in deltas.items() if i == index}
                nets.append(DreamSimBackbone(kind, self._backbone(b, kind, patch, paths.get(b), mine)))
        self.backbones = nn.ModuleList(nets)
        self.eval()

    @staticmethod
    def _backbone(name: str, kind: str, patch: int, path: Path | None, deltas: dict[int, torch.Tensor]) -> nn.Module:
        what = f"dreamsim {name} from {path}"
        if kind == "dino":
            if path is None:
                return build_dino_vit().eval().requires_grad_(False)
            sd = dict(load_state_dict_file(path))
            _merge(sd, deltas, "blocks.{}.attn.qkv.weight", what)
            return load_on_meta(build_dino_vit, sd, what).eval().requires_grad_(False)
        build = _open_clip_builder(patch, quick_gelu=kind == "clip")
        if path is None:
            return build().eval().requires_grad_(False)
        sd = dino_layout_to_open_clip(load_state_dict_file(path), what)
        _merge(sd, deltas, "transformer.resblocks.{}.attn.in_proj_weight", what)
        return load_on_meta(build, sd, what).eval().requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The concatenated backbone features ``e`` (before centring), of images resized to 224."""
        x = resize_square(x, 224)
        return torch.cat([b(x) for b in self.backbones], dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``ê = (e − mean e) / ‖e − mean e‖`` of ``[0, 1]`` images (1792-d for the ensemble)."""
        self.check_images(x)
        e = self.features(x)
        e = e - e.mean(dim=1, keepdim=True)
        return e / e.norm(dim=1, keepdim=True)

    def compare(self, ex: torch.Tensor, ey: torch.Tensor) -> torch.Tensor:
        """``1 − cos∠(ex, ey)`` in float64."""
        return cosine_distance(ex, ey)


__all__ = ["BACKBONES", "BRANCHES", "DreamSimBackbone", "DreamSimMetric", "dino_layout_to_open_clip",
           "lora_deltas", "read_lora"]
