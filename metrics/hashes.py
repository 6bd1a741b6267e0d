"""Perceptual-hash baselines ``phash`` and ``pdq``: the normalised Hamming distance of two image hashes.

These are the hashes platforms match images with (near-duplicate detection, lists of
known harmful images), so how far an adversary moves them is a question of its own.
Each image is converted exactly as the libraries expect it (``round(x·255)``, RGB,
``H×W×3`` ``uint8``) and hashed on the CPU, one image at a time (both libraries work
per image); the distance is the fraction of hash bits that differ, in ``[0, 1]``.

- ``phash``: the DCT hash of Zauner (2010) as the ``imagehash`` package computes it
  (``imagehash.phash``: grey, resized to ``hash_size·highfreq_factor`` square by
  Pillow's Lanczos filter, 2-D DCT, the ``hash_size × hash_size`` lowest frequencies
  thresholded at their median): ``hash_size²`` bits, 64 by default.
- ``pdq``: Facebook/Meta's PDQ (``pdqhash.compute``), 256 bits; PDQ hashes are what
  Meta's ThreatExchange shares. Images smaller than about 5 pixels a side hash to all
  zeros (PDQ quality 0).

Neither has a gradient (``differentiable = False``): gradient attacks refuse them and
only gradient-free attacks (Square, through ``autoattack`` with ``attacks = ["square"]``)
apply. Neither is certifiable. They have no weights: :meth:`weights_id` hashes the
libraries' names and versions instead, and :meth:`Metric.metric_id` adds the options.
"""

from __future__ import annotations

import hashlib
from importlib import metadata

import numpy as np
import torch

from metrics.base import Metric
from suite import validate
from suite.errors import SuiteError
from suite.registry import register_metric

_SQUARE = "attacked only by gradient-free attacks (Square)"


def to_uint8_images(x: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` floats in ``[0, 1]`` → ``(B, H, W, 3)`` ``uint8`` RGB, ``round(x·255)``.

    Rounding is half to even (``torch.round``); values outside ``[0, 1]`` are clamped first.
    """
    x = x.detach()
    if not x.is_floating_point():
        raise SuiteError(f"hash metrics expect float images in [0, 1]; got dtype {x.dtype}")
    pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return np.ascontiguousarray(pixels.permute(0, 2, 3, 1).cpu().numpy())


def hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Normalised Hamming distance of bit tensors ``(B, bits)`` (or broadcastable): bits differing / bits."""
    return (a != b).sum(-1).double() / a.shape[-1]


class _HashMetric(Metric):
    """A perceptual hash per image and the normalised Hamming distance between hashes.

    ``represent(x)`` is the hash, a ``bool`` tensor ``(B, bits)`` on ``x``'s device, so a
    gallery (the candidates of a batch of triplets) is hashed once.
    """

    differentiable = False
    lower_is_better = True
    certifiable = False
    #: distributions whose versions define the function (hashed by :meth:`weights_id`)
    libraries: tuple[str, ...] = ()

    @property
    def bits(self) -> int:
        raise NotImplementedError

    def hash_one(self, image: np.ndarray) -> np.ndarray:
        """The hash bits of one ``H×W×3`` ``uint8`` RGB image, as a flat array of 0/1 of length ``bits``."""
        raise NotImplementedError

    def represent(self, x: torch.Tensor) -> torch.Tensor:
        """The hashes of ``x``: ``bool`` ``(B, bits)`` on ``x``'s device."""
        self.check_images(x)
        images = to_uint8_images(x)
        out = np.zeros((len(images), self.bits), dtype=bool)
        for i, image in enumerate(images):
            out[i] = np.asarray(self.hash_one(image)).reshape(-1).astype(bool)
        return torch.from_numpy(out).to(x.device)

    @property
    def has_embed(self) -> bool:
        """The hash is the image's embedding: a retrieval query is hashed once against a whole gallery
        (:func:`suite.retrieval.query_distances`), not once per gallery item."""
        return True

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`represent`: the hash bits."""
        return self.represent(x)

    def compare(self, hx: torch.Tensor, hy: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised Hamming distance of two hash tensors, ``(B,)`` in ``like``'s dtype and on its device
        (default: the default float dtype, on ``hx``'s device)."""
        like = hx.new_zeros((), dtype=torch.get_default_dtype()) if like is None else like
        if hy.ndim != 2 or hy.shape[-1] != self.bits:
            raise SuiteError(f"metric {self.name or type(self).__name__!r}: expected hashes (B, {self.bits}) "
                             f"from represent(); got shape {tuple(hy.shape)}")
        d = hamming(hx.to(torch.bool), hy.to(device=hx.device, dtype=torch.bool))
        dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
        return d.to(device=like.device, dtype=dtype)

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.check_images(x, y)
        return self.compare(self.represent(x), self.represent(y), x)

    def distance_to(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Hash ``x`` and compare it with ``r = represent(y)``."""
        return self.compare(self.represent(x), r, x)

    def distances_to(self, ref: torch.Tensor, r0: torch.Tensor, r1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hash ``ref`` once and compare it with the candidates' hashes ``r0``, ``r1``."""
        h = self.represent(ref)
        return self.compare(h, r0, ref), self.compare(h, r1, ref)

    def weights_id(self) -> str:
        """No weights: the class and the names and versions of the libraries that compute the hash."""
        text = type(self).__qualname__ + "".join(f"|{lib}=={metadata.version(lib)}" for lib in self.libraries)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@register_metric("phash", description=(
    "pHash, the DCT perceptual hash of Zauner 2010 (imagehash.phash, 64 bits by default), which platforms use for "
    "near-duplicate image matching; normalised Hamming distance; no gradient: " + _SQUARE))
class PHash(_HashMetric):
    """Normalised Hamming distance of ``imagehash.phash`` hashes (``hash_size²`` bits).

    Arguments:
        hash_size (int): side of the retained block of DCT coefficients (``≥ 2``); the hash
            has ``hash_size²`` bits. Default ``8`` (64 bits).
        highfreq_factor (int): the image is resized to ``hash_size·highfreq_factor`` square
            before the DCT (``≥ 1``). Default ``4``.
    """

    # Pillow resizes before the DCT: its version is part of the function
    libraries = ("ImageHash", "Pillow")

    def __init__(self, hash_size: int = 8, highfreq_factor: int = 4):
        super().__init__()
        self.hash_size = validate.integer(hash_size, "phash: hash_size", 2)
        self.highfreq_factor = validate.integer(highfreq_factor, "phash: highfreq_factor", 1)

    @property
    def bits(self) -> int:
        return self.hash_size**2

    def hash_one(self, image: np.ndarray) -> np.ndarray:
        import imagehash
        from PIL import Image

        h = imagehash.phash(Image.fromarray(image), hash_size=self.hash_size,
                            highfreq_factor=self.highfreq_factor)
        return h.hash


@register_metric("pdq", description=(
    "PDQ, Facebook/Meta's 256-bit perceptual hash (pdqhash), the hash Meta's ThreatExchange shares to match "
    "known harmful images; normalised Hamming distance; no gradient: " + _SQUARE))
class PDQ(_HashMetric):
    """Normalised Hamming distance of PDQ hashes (``pdqhash.compute``, 256 bits). No options."""

    libraries = ("pdqhash",)

    @property
    def bits(self) -> int:
        return 256

    def hash_one(self, image: np.ndarray) -> np.ndarray:
        import pdqhash

        bits, _quality = pdqhash.compute(image)
        return bits


__all__ = ["PHash", "PDQ", "hamming", "to_uint8_images"]
