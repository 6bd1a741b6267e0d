"""The ``dino`` metric: cosine distance of DINO ViT-B/16 CLS embeddings (Caron et al. 2021).

    d(x, y) = 1 − cos∠(f(T(x)), f(T(y))),

``T`` = PIL-style bicubic resize to 224 and ImageNet mean/std (:class:`metrics.clip.ImageTransform`),
``f`` = the CLS token of timm's ``vit_base_patch16_224.dino`` after the final LayerNorm (the
feature DINO's own evaluations use; ``final_norm=False`` takes it before, as DreamSim does).

Weights: DINO's released backbone, as timm serves it (Hugging Face ``timm/vit_base_patch16_224.dino``,
``model.safetensors``) or as DINO's torch hub checkpoint ``dino_vitbase16_pretrain.pth`` (the
same tensors under the same names); loaded strictly into the timm model built without weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from metrics import weights as W
from metrics.base import EmbeddingMetric
from metrics.clip import (IMAGENET_MEAN, IMAGENET_STD, ImageTransform, cosine_distance, find_weights,
                          load_on_meta, load_state_dict_file, random_requested)
from suite.registry import register_metric

TIMM_NAME = "vit_base_patch16_224.dino"
DINO_HUB_FILE = W.WeightFile(
    "dino_vitbase16_pretrain.pth",
    "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
    torch_hub=True, dreamsim="checkpoints/dino_vitbase16_pretrain.pth",
)
DINO_TAG = W.register_tag(W.WeightsTag(
    tag="dino-vitb16", metric="dino",
    files=(W.WeightFile("model.safetensors",
                        "https://huggingface.co/timm/vit_base_patch16_224.dino/resolve/main/model.safetensors",
                        sha256="93181583427d6de3e18ab0e6ee4df35736cfc51a3c1bf9ae0e9b53b1316598dc",
                        hf_repo="timm/vit_base_patch16_224.dino"),),
    paper="Caron et al. 2021, Emerging Properties in Self-Supervised Vision Transformers (ICCV)",
    description="DINO ViT-B/16 backbone (teacher), as timm serves it; DINO's hub .pth holds the same tensors",
    extra={"alternatives": {"model.safetensors": (DINO_HUB_FILE,)}},
))


def build_dino_vit() -> nn.Module:
    """timm's ``vit_base_patch16_224.dino`` without weights (no head: ``num_classes = 0``)."""
    import timm

    return timm.create_model(TIMM_NAME, pretrained=False)


def load_dino_vit(path: str | Path | None, seed: int = 0) -> nn.Module:
    """The DINO ViT-B/16 with the weights at ``path`` (strict), or random weights drawn with ``seed``."""
    if path is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = build_dino_vit()
    else:
        model = load_on_meta(build_dino_vit, load_state_dict_file(path), f"DINO ViT-B/16 from {path}")
    return model.eval().requires_grad_(False)


def cls_token(vit: nn.Module, x: torch.Tensor, final_norm: bool = True) -> torch.Tensor:
    """The CLS token of a timm ViT after its last block: ``norm(z)[:, 0]``, or ``z[:, 0]`` without the norm.

    The token path of timm's ``forward_features`` (patch embedding, class token and position
    embedding, blocks), stopping before the final LayerNorm when ``final_norm`` is false.
    """
    z = vit.patch_embed(x)
    z = vit._pos_embed(z)
    z = vit.patch_drop(z)
    z = vit.norm_pre(z)
    z = vit.blocks(z)
    if final_norm:
        z = vit.norm(z)
    return z[:, 0]


@register_metric("dino")
class DINOMetric(EmbeddingMetric):
    """DINO ViT-B/16 (Caron et al. 2021): 1 − cos of the CLS embedding, ImageNet mean/std, resize to 224 inside.

    Args:
        weights: ``model.safetensors`` of ``timm/vit_base_patch16_224.dino`` or DINO's
            ``dino_vitbase16_pretrain.pth``, or a folder holding one; default: the tag
            ``dino-vitb16`` (suite folder, Hugging Face cache, torch hub cache, ``./models/checkpoints``).
        pretrained: ``False`` = random weights drawn with ``seed``; only when asked.
        final_norm: take the CLS token after the final LayerNorm (default, DINO's feature)
            or before it (DreamSim's DINO feature).
        seed: seed of the random weights.
    """

    input_size = 224

    def __init__(self, weights: str | Path | None = None, pretrained: bool = True, final_norm: bool = True,
                 seed: int = 0):
        super().__init__()
        self.random_weights = random_requested(weights, pretrained, "dino")
        path = None if self.random_weights else find_weights(DINO_TAG, explicit=weights)
        self.vit = load_dino_vit(path, seed)
        self.final_norm = bool(final_norm)
        self.weights = None if weights is None else str(weights)
        self.weights_path = None if path is None else str(path)
        self.transform = ImageTransform(224, IMAGENET_MEAN, IMAGENET_STD)
        self.eval()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The CLS embedding (768) of ``[0, 1]`` images, resized to 224 and normalised inside."""
        self.check_images(x)
        return cls_token(self.vit, self.transform(x), self.final_norm)

    def compare(self, ex: torch.Tensor, ey: torch.Tensor) -> torch.Tensor:
        """``1 − cos∠(ex, ey)`` in float64."""
        return cosine_distance(ex, ey)


__all__ = ["DINOMetric", "DINO_HUB_FILE", "DINO_TAG", "TIMM_NAME", "build_dino_vit", "cls_token", "load_dino_vit"]
