"""``synthetic-2afc``: 2AFC triplets made on the spot from the colour photographs scikit-image ships.

Each triplet takes a random square crop of one photograph as the reference and
applies one distortion family at two strengths ``s0, s1`` drawn uniformly in
``[0, 1]``: ``x0 = family(ref, s0)``, ``x1 = family(ref, s1)``. Within a family
more strength moves the image farther from the reference, so the simulated
judgement is the logistic ``j = σ(k·(s0 − s1))`` with ``k = JUDGE_SLOPE = 10``:
``j ≈ ½`` for near-equal strengths, ``j → 1`` when ``x1`` is much less distorted.

Splits are made by photograph, so no photograph appears in two splits
(:data:`PHOTOS`). Triplet ``i`` of a split depends only on ``(seed, split, i)``,
so a smaller ``count`` gives a prefix of a larger one. The generated set is
cached as one file (uint8 images) keyed by a hash of every option.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import tempfile
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import skimage
import skimage.data
import torch
from PIL import Image, ImageFilter

from suite.datasets.base import TwoAFCDataset
from suite import validate
from suite.atomic import atomic_write
from suite.errors import SuiteError
from suite.registry import register_dataset

#: photographs (files of ``skimage/data``) of each split; the stereo pair motorcycle_left/right stays together
PHOTOS: dict[str, tuple[str, ...]] = {
    "train": ("hubble_deep_field.jpg", "ihc.png", "retina.jpg", "motorcycle_left.png", "motorcycle_right.png"),
    "val": ("coffee.png", "rocket.jpg"),
    "test": ("astronaut.png", "chelsea.png"),
}
SPLITS = tuple(PHOTOS)
#: slope ``k`` of the simulated judgement ``j = σ(k·(s0 − s1))``
JUDGE_SLOPE = 10.0
#: bump when the generated images change, so old cache files are not reused
GENERATOR_VERSION = 1
#: crop side as a fraction of the photograph's shorter side
CROP_FRACTION = (0.25, 0.6)
#: largest translation, as a fraction of the crop side
MAX_SHIFT = 0.25
#: crops whose grey-level standard deviation is below this are redrawn (flat sky, black borders)
MIN_CROP_STD = 0.05
MIN_IMAGE_SIZE = 16


def render(photo: Image.Image, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Region ``box`` (left, top, right, bottom; fractional pixels) of ``photo`` as ``(size, size, 3)`` uint8."""
    return np.asarray(photo.resize((size, size), Image.Resampling.BICUBIC, box=box))


@dataclass
class Scene:
    """One reference crop and the per-triplet parameters both candidates share."""

    photo: Image.Image
    box: tuple[float, float, float, float]  # left, top, right, bottom in photograph pixels
    size: int
    direction: float  # angle of the translation, radians
    sign: float  # ±1: brighter or darker, hue turned one way or the other
    ref: np.ndarray  # (size, size, 3) uint8, render(photo, box, size)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _unit(scene: Scene) -> np.ndarray:
    return scene.ref.astype(np.float32) / 255.0


def gaussian_noise(scene: Scene, s: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise, ``x = ref + 0.25·s·z`` with ``z ~ N(0, 1)`` per pixel (own draw per candidate)."""
    return _to_uint8(_unit(scene) + 0.25 * s * rng.standard_normal(scene.ref.shape, dtype=np.float32))


def gaussian_blur(scene: Scene, s: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur of standard deviation ``s·size/16`` pixels (4 px at 64 px)."""
    radius = s * scene.size / 16
    return np.asarray(Image.fromarray(scene.ref).filter(ImageFilter.GaussianBlur(radius)))


def jpeg(scene: Scene, s: float, rng: np.random.Generator) -> np.ndarray:
    """JPEG round trip (Pillow, 4:4:4 chroma) at quality ``round(100 − 95·s)``; ``s = 0`` is the reference itself."""
    if s == 0:
        return scene.ref
    buffer = io.BytesIO()
    Image.fromarray(scene.ref).save(buffer, format="JPEG", quality=round(100 - 95 * s), subsampling=0)
    buffer.seek(0)
    with Image.open(buffer) as img:
        return np.asarray(img.convert("RGB"))


def contrast_brightness(scene: Scene, s: float, rng: np.random.Generator) -> np.ndarray:
    """Contrast towards the mean and a brightness offset: ``x = m + (1 − 0.6·s)(ref − m) ± 0.25·s``."""
    x = _unit(scene)
    m = x.mean()
    return _to_uint8(m + (1 - 0.6 * s) * (x - m) + scene.sign * 0.25 * s)


def colour_shift(scene: Scene, s: float, rng: np.random.Generator) -> np.ndarray:
    """Hue rotation: every RGB vector turns by ``±s·90°`` about the grey axis ``(1, 1, 1)/√3`` (Rodrigues)."""
    theta = scene.sign * s * math.pi / 2
    u = np.full(3, 1 / math.sqrt(3), dtype=np.float32)
    cross = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]], dtype=np.float32)
    rotation = math.cos(theta) * np.eye(3, dtype=np.float32) + math.sin(theta) * cross
    rotation += (1 - math.cos(theta)) * np.outer(u, u)
    return _to_uint8(_unit(scene) @ rotation.T)


def translation(scene: Scene, s: float, rng: np.random.Generator) -> np.ndarray:
    """The crop re-taken from the photograph ``s·MAX_SHIFT`` crop sides away, in the triplet's direction."""
    shift = s * MAX_SHIFT * (scene.box[2] - scene.box[0])
    dx, dy = shift * math.cos(scene.direction), shift * math.sin(scene.direction)
    left, top, right, bottom = scene.box
    return render(scene.photo, (left + dx, top + dy, right + dx, bottom + dy), scene.size)


def pixelation(scene: Scene, s: float, rng: np.random.Generator) -> np.ndarray:
    """Box-average down to ``round(size / (1 + 7·s))`` pixels a side, then nearest-neighbour back up."""
    small = max(1, round(scene.size / (1 + 7 * s)))
    img = Image.fromarray(scene.ref).resize((small, small), Image.Resampling.BOX)
    return np.asarray(img.resize((scene.size, scene.size), Image.Resampling.NEAREST))


Family = Callable[[Scene, float, np.random.Generator], np.ndarray]
FAMILIES: dict[str, Family] = {
    "noise": gaussian_noise,
    "blur": gaussian_blur,
    "jpeg": jpeg,
    "contrast": contrast_brightness,
    "colour": colour_shift,
    "translation": translation,
    "pixelation": pixelation,
}


def judge_from_strengths(s0: float, s1: float) -> float:
    """Fraction of simulated people who find ``x1`` closer: ``σ(k·(s0 − s1)) = 1 / (1 + exp(−k·(s0 − s1)))``."""
    return 1.0 / (1.0 + math.exp(-JUDGE_SLOPE * (s0 - s1)))


def photo_path(name: str) -> Path:
    """Where scikit-image keeps the photograph ``name``."""
    return Path(skimage.data.__file__).parent / name


@lru_cache(maxsize=None)
def load_photo(name: str) -> Image.Image:
    """The photograph ``name`` from ``skimage/data`` as an RGB Pillow image (read once per process)."""
    path = photo_path(name)
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as err:
        raise SuiteError(f"synthetic-2afc: cannot read the scikit-image photograph {str(path)!r}: {err}") from None


def draw_scene(rng: np.random.Generator, photos: tuple[str, ...], size: int) -> tuple[str, Scene]:
    """A random photograph of ``photos`` and a random square crop of it.

    The crop side is a fraction ``CROP_FRACTION`` of the shorter side and keeps a
    margin of ``MAX_SHIFT`` crop sides inside the photograph for the translation
    family. A nearly flat crop (grey-level std below ``MIN_CROP_STD``) is redrawn,
    up to 20 times.
    """
    name = photos[int(rng.integers(len(photos)))]
    photo = load_photo(name)
    width, height = photo.size
    direction, sign = float(rng.uniform(0, 2 * math.pi)), float(rng.choice((-1.0, 1.0)))
    for _ in range(20):
        side = rng.uniform(*CROP_FRACTION) * min(width, height)
        margin = MAX_SHIFT * side
        left = rng.uniform(margin, width - side - margin)
        top = rng.uniform(margin, height - side - margin)
        box = (left, top, left + side, top + side)
        ref = render(photo, box, size)
        if ref.astype(np.float32).mean(axis=2).std() / 255.0 >= MIN_CROP_STD:
            break
    return name, Scene(photo, box, size, direction, sign, ref)


def make_triplet(seed: int, split: str, index: int, size: int) -> dict:
    """Triplet ``index`` of ``split``: images ``(size, size, 3)`` uint8, judge, strengths, family and photograph.

    Its random generator is seeded from ``(seed, split, index)`` alone.
    """
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    photo, scene = draw_scene(rng, PHOTOS[split], size)
    family = list(FAMILIES)[int(rng.integers(len(FAMILIES)))]
    s0, s1 = (float(v) for v in rng.uniform(0.0, 1.0, size=2))
    distort = FAMILIES[family]
    return {
        "ref": scene.ref,
        "x0": distort(scene, s0, rng),
        "x1": distort(scene, s1, rng),
        "judge": judge_from_strengths(s0, s1),
        "strengths": (s0, s1),
        "family": family,
        "photo": photo,
    }


def generate(split: str, image_size: int, count: int, seed: int) -> dict:
    """All ``count`` triplets of ``split`` as uint8 tensors ``(N, 3, S, S)`` plus per-triplet metadata."""
    triplets = [make_triplet(seed, split, i, image_size) for i in range(count)]

    def stack(key: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([t[key] for t in triplets])).permute(0, 3, 1, 2).contiguous()

    return {
        "ref": stack("ref"),
        "x0": stack("x0"),
        "x1": stack("x1"),
        "judge": torch.tensor([t["judge"] for t in triplets], dtype=torch.float32),
        "strengths": torch.tensor([t["strengths"] for t in triplets], dtype=torch.float32),
        "families": [t["family"] for t in triplets],
        "photos": [t["photo"] for t in triplets],
    }


def default_cache_dir() -> Path:
    """``$LIPSIM_SUITE_CACHE``, else ``~/.cache/lipsim-suite``."""
    return Path(os.environ.get("LIPSIM_SUITE_CACHE") or Path.home() / ".cache" / "lipsim-suite").expanduser()


def read_cache(path: Path) -> dict | None:
    """The cached set at ``path``, or ``None`` if it is absent or unreadable (it is then regenerated)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError):
        return None


def write_cache(path: Path, data: dict) -> None:
    """Write atomically (:func:`suite.atomic.atomic_write`); failure only warns."""
    try:
        atomic_write(path, lambda tmp: torch.save(data, tmp))
    except OSError as err:
        warnings.warn(f"synthetic-2afc: cannot write the cache file {str(path)!r} ({err}); using it from memory")


@register_dataset("synthetic-2afc", aliases=("synthetic",))
class Synthetic2AFC(TwoAFCDataset):
    """Embedded 2AFC set: crops of scikit-image photographs under 7 distortion families (no download)."""

    def __init__(
        self,
        split: str = "test",
        image_size: int = 64,
        count: int = 256,
        seed: int = 0,
        cache_dir: str | Path | None = None,
    ):
        self.split = validate.choice(split, SPLITS, "synthetic-2afc split")
        self.image_size = validate.image_size(image_size, "synthetic-2afc")
        if self.image_size < MIN_IMAGE_SIZE:
            raise SuiteError(f"synthetic-2afc: image_size must be at least {MIN_IMAGE_SIZE}; got {image_size!r}")
        self.count = validate.integer(count, "synthetic-2afc: count", 1)
        self.seed = validate.integer(seed, "synthetic-2afc: seed", 0)
        self.key = self._key()
        self.cache_path = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.cache_path = self.cache_path / f"synthetic-2afc-{self.key}.pt"
        data = read_cache(self.cache_path)
        if data is None:
            data = generate(self.split, self.image_size, self.count, self.seed)
            write_cache(self.cache_path, data)
        self.ref, self.x0, self.x1, self.judge = data["ref"], data["x0"], data["x1"], data["judge"]
        self.strengths, self.families, self.photos = data["strengths"], data["families"], data["photos"]

    def _key(self) -> str:
        """Hash of every option and of what the images are made from."""
        spec = {
            "version": GENERATOR_VERSION,
            "skimage": skimage.__version__,
            "photos": PHOTOS[self.split],
            "families": list(FAMILIES),
            "split": self.split,
            "image_size": self.image_size,
            "count": self.count,
            "seed": self.seed,
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        if not 0 <= index < self.count:
            raise IndexError(index)
        return (
            self.ref[index].float() / 255,
            self.x0[index].float() / 255,
            self.x1[index].float() / 255,
            float(self.judge[index]),
            self.sample_id(index),
        )

    def sample_id(self, index: int) -> str:
        return f"synthetic/{self.split}/{index:06d}"

    def fingerprint(self) -> str:
        """The cache key: it covers the seed, which the sample ids do not."""
        return self.key
