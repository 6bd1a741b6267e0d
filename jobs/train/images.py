"""Unlabelled images for distillation: an image folder, or crops of the embedded photographs.

* :class:`FolderImages`: every ``*.jpeg``/``*.jpg``/``*.png`` under a folder, recursively
  (ImageNet's ``root/<class>/*.JPEG`` layout works as it is), sorted by relative path,
  resized to a square (``suite.datasets.images.load_image``).
* :class:`PhotoCrops`: ``count`` random square crops of the training photographs of
  ``synthetic-2afc`` (scikit-image's colour photographs; the test photographs stay
  unseen), drawn by the same code as that dataset's reference crops.

An image source is an ordered list: image ``i`` is always the same image, and
:meth:`ImageSource.fingerprint` identifies the list for the teacher cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from jobs.train.spec import TrainSpec
from suite.errors import SuiteError

SUFFIXES = (".jpeg", ".jpg", ".png")


class ImageSource:
    """Ordered images ``(3, S, S)`` in ``[0, 1]``."""

    image_size: int

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()


class FolderImages(ImageSource):
    """Image files under ``root`` (recursive), ordered by relative path."""

    def __init__(self, root: Path, image_size: int):
        self.root, self.image_size = Path(root).resolve(), image_size
        self.files = sorted(
            (p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
             if p.suffix.lower() in SUFFIXES and p.is_file()),
        )
        if not self.files:
            raise SuiteError(f"distillation images: no {'/'.join(SUFFIXES)} files under {str(self.root)!r}")

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> torch.Tensor:
        from suite.datasets.images import load_image

        return load_image(self.root / self.files[index], self.image_size)

    def describe(self) -> dict:
        listing = hashlib.sha256("\n".join(self.files).encode()).hexdigest()
        return {"kind": "folder", "root": str(self.root), "files": len(self.files), "listing": listing}


class PhotoCrops(ImageSource):
    """``count`` crops of the ``synthetic-2afc`` training photographs; crop ``i`` depends on ``(seed, i)`` only."""

    def __init__(self, count: int, image_size: int, seed: int):
        self.count, self.image_size, self.seed = count, image_size, seed
        self._crops: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.count

    def load(self, index: int) -> torch.Tensor:
        from suite.datasets.synthetic import PHOTOS, draw_scene

        if not 0 <= index < self.count:
            raise IndexError(index)
        if index not in self._crops:
            # stream 1 keeps these crops apart from the dataset's triplets, which use the split's index
            rng = np.random.default_rng([self.seed, 1_000_003, index])
            _, scene = draw_scene(rng, PHOTOS["train"], self.image_size)
            self._crops[index] = torch.from_numpy(np.array(scene.ref)).permute(2, 0, 1)  # a writable copy
        return self._crops[index].float() / 255

    def describe(self) -> dict:
        import skimage

        from suite.datasets.synthetic import GENERATOR_VERSION, PHOTOS

        return {"kind": "photo-crops", "photos": list(PHOTOS["train"]), "count": self.count, "seed": self.seed,
                "image_size": self.image_size, "generator": GENERATOR_VERSION, "skimage": skimage.__version__}


def model_input_size(spec: TrainSpec) -> int:
    """Input size of the student: from ``init``'s config when given, else from the preset."""
    from metrics.lipsim import checkpoint
    from metrics.lipsim.presets import preset

    if spec.init is not None:
        config = Path(spec.init) / checkpoint.CONFIG_FILE
        if config.is_file():
            return int(json.loads(config.read_text())["input_size"])
        return checkpoint.load(spec.init).config.input_size
    return preset(spec.preset, **spec.model_options).input_size


def image_source(spec: TrainSpec) -> ImageSource:
    """The distillation images of ``spec`` at ``spec.image_size`` (default: the student's input size)."""
    size = spec.image_size or model_input_size(spec)
    if spec.images is not None:
        return FolderImages(spec.images, size)
    return PhotoCrops(spec.image_count, size, spec.seed)
