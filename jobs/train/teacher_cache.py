"""Teacher embeddings cached on disk in shards, so that distillation runs the teacher once per image.

A cache lives in ``<cache_dir>/teacher-embeddings/<key>/`` where ``key`` hashes the
teacher (metric name, options, weights hash), the image list and size, and the
shard size. Shard ``k`` (``shard-00000k.safetensors``, tensor ``embeddings`` of shape
``(n_k, D)``, float32) holds images ``k·shard_size …`` in the image list's order and
is written atomically (temporary file, then ``os.replace``): a shard file that
exists is complete, and a killed run recomputes only the missing shards.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from suite.atomic import atomic_write, atomic_write_json
from suite.errors import SuiteError

#: bump when the shard format changes, so old caches are not reused
CACHE_VERSION = 1
TENSOR = "embeddings"


class TeacherCache:
    """The shards of one (teacher, image list, image size, shard size)."""

    def __init__(self, folder: Path, key: str, count: int, shard_size: int):
        self.folder, self.key, self.count, self.shard_size = Path(folder), key, count, shard_size
        self.dim: int | None = None

    @classmethod
    def open(cls, cache_dir: Path, teacher_id: str, source, shard_size: int) -> "TeacherCache":
        """The cache of ``teacher_id`` on the images of ``source`` (an :class:`~jobs.train.images.ImageSource`)."""
        spec = {"version": CACHE_VERSION, "teacher": teacher_id, "images": source.fingerprint(),
                "image_size": source.image_size, "count": len(source), "shard_size": shard_size}
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]
        return cls(Path(cache_dir) / "teacher-embeddings" / key, key, len(source), shard_size)

    @property
    def n_shards(self) -> int:
        return math.ceil(self.count / self.shard_size)

    def shard_range(self, k: int) -> range:
        return range(k * self.shard_size, min((k + 1) * self.shard_size, self.count))

    def owned(self, rank: int, world: int) -> list[int]:
        """Shards of worker ``rank``: ``k ≡ rank (mod world)``."""
        return list(range(rank, self.n_shards, world))

    def owned_count(self, rank: int, world: int) -> int:
        return sum(len(self.shard_range(k)) for k in self.owned(rank, world))

    def path(self, k: int) -> Path:
        return self.folder / f"shard-{k:06d}.safetensors"

    def has(self, k: int) -> bool:
        return self.path(k).is_file()

    def write(self, k: int, embeddings: torch.Tensor) -> None:
        """Store shard ``k`` atomically; its row count must match the shard."""
        rows = len(self.shard_range(k))
        if embeddings.ndim != 2 or embeddings.shape[0] != rows:
            raise SuiteError(f"teacher cache: shard {k} needs {rows} embeddings (rows, D); got {tuple(embeddings.shape)}")
        tensors = {TENSOR: embeddings.float().contiguous()}
        atomic_write(self.path(k), lambda tmp: save_file(tensors, str(tmp), metadata={"key": self.key, "shard": str(k)}))
        self.dim = int(embeddings.shape[1])

    def read(self, k: int) -> torch.Tensor:
        """Shard ``k`` as ``(n_k, D)`` float32."""
        path = self.path(k)
        try:
            embeddings = load_file(str(path))[TENSOR]
        except (OSError, KeyError, RuntimeError) as err:
            raise SuiteError(f"teacher cache: cannot read {path} ({err}); delete it to recompute") from None
        if embeddings.shape[0] != len(self.shard_range(k)):
            raise SuiteError(f"teacher cache: {path} holds {embeddings.shape[0]} embeddings, expected "
                             f"{len(self.shard_range(k))}; delete it to recompute")
        return embeddings

    def shard_dim(self, k: int) -> int:
        """Embedding dimension stored in shard ``k``, read from its header only."""
        with safe_open(str(self.path(k)), framework="pt") as f:
            return int(f.get_slice(TENSOR).get_shape()[1])

    def write_meta(self, **extra) -> None:
        """``meta.json``: what the cache holds (for people; the code never needs it)."""
        meta = {"key": self.key, "count": self.count, "shard_size": self.shard_size, "dim": self.dim, **extra}
        atomic_write_json(self.folder / "meta.json", meta)
