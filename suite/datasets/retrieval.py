"""Retrieval (copy-detection) datasets: a gallery of originals and distractors, and queries.

Each query is an edited copy of zero or more gallery images, its *matches* (gallery
indices; empty for a query without an original). A metric ranks the gallery by its
distance to the query; the evaluator scores how high the true originals come.

The contract (:class:`RetrievalDataset`, ``task = "retrieval"``):

- ``len(ds)`` queries; ``ds[i] = (image, matches, query_id)`` with ``image`` a float
  tensor ``(3, H, W)`` in ``[0, 1]`` at ``image_size``, ``matches`` a tuple of gallery
  indices and ``query_id`` a stable string; ``batches(b)`` yields :class:`suite.types.Queries`.
- ``gallery_ids()``, ``gallery_size()``, ``gallery_batches(b)``: the gallery in its fixed
  order, ``(b, 3, H, W)`` per batch, read batch by batch (a 10k-image gallery of files is
  never held in memory at once).
- ``fingerprint()`` hashes the type, split, image size, every query id with its matches
  and every gallery id (part of each cell key); ``sample_range(start, stop)`` (a shard:
  same gallery, no fingerprint of its own) and ``limited(limit)`` (the first queries, the
  whole gallery, its own fingerprint) are views sharing the gallery.

Built-ins: ``synthetic-copies`` (embedded, made from scikit-image photographs),
``copydays`` (INRIA Copydays as DINO evaluates it) and ``image-pairs`` (your own folders).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import string
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import skimage
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from suite import validate
from suite.datasets.images import check_root, load_image
from suite.datasets.synthetic import MIN_CROP_STD, MIN_IMAGE_SIZE, PHOTOS, load_photo, render
from suite.errors import SuiteError
from suite.registry import register_dataset
from suite.types import Queries

#: file suffixes read as images (those of DINO's ``is_image_file``), compared lower-case
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class RetrievalDataset:
    """Base class of every retrieval dataset (see the module docstring for the contract).

    Subclasses implement ``__len__``, :meth:`query_image`, :meth:`matches`,
    :meth:`sample_id`, :meth:`gallery_ids` and :meth:`gallery_image`; they may override
    :meth:`gallery_batches` when the gallery is already in memory.
    """

    #: registry name, set by :func:`suite.datasets.load`
    name: str = ""
    split: str = ""
    image_size: int = 0
    task: str = "retrieval"

    # ---- what subclasses provide
    def __len__(self) -> int:
        raise NotImplementedError

    def query_image(self, index: int) -> torch.Tensor:
        """Query ``index`` as ``(3, H, W)`` float in ``[0, 1]``."""
        raise NotImplementedError

    def matches(self, index: int) -> tuple[int, ...]:
        """The gallery indices of query ``index``'s originals (possibly none)."""
        raise NotImplementedError

    def sample_id(self, index: int) -> str:
        raise NotImplementedError

    def gallery_ids(self) -> list[str]:
        raise NotImplementedError

    def gallery_image(self, index: int) -> torch.Tensor:
        """Gallery item ``index`` as ``(3, H, W)`` float in ``[0, 1]``."""
        raise NotImplementedError

    # ---- derived
    def __getitem__(self, index: int) -> tuple[torch.Tensor, tuple[int, ...], str]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.query_image(index), self.matches(index), self.sample_id(index)

    def gallery_size(self) -> int:
        return len(self.gallery_ids())

    def gallery_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """The gallery in order, ``(b, 3, H, W)`` per batch; only one batch is read at a time."""
        batch_size = validate.integer(batch_size, "gallery batch_size", 1)
        size = self.gallery_size()
        for start in range(0, size, batch_size):
            yield torch.stack([self.gallery_image(j) for j in range(start, min(start + batch_size, size))])

    def batches(self, batch_size: int) -> Iterator[Queries]:
        """Consecutive batches of :class:`~suite.types.Queries`, in index order."""
        batch_size = validate.integer(batch_size, "batch_size", 1)
        for start in range(0, len(self), batch_size):
            items = [self[i] for i in range(start, min(start + batch_size, len(self)))]
            yield Queries(images=torch.stack([it[0] for it in items]),
                          matches=[it[1] for it in items], sample_id=[it[2] for it in items])

    def fingerprint(self) -> str:
        """Hash of the type, split, image size, query ids with their matches, and gallery ids."""
        h = hashlib.sha256(f"{type(self).__qualname__}|{self.split}|{self.image_size}|{len(self)}".encode())
        for i in range(len(self)):
            h.update(f"q\0{self.sample_id(i)}\0{','.join(map(str, self.matches(i)))}\0".encode())
        for gallery_id in self.gallery_ids():
            h.update(f"g\0{gallery_id}\0".encode())
        return h.hexdigest()[:16]

    def sample_range(self, start: int, stop: int) -> "QueryRange":
        """Queries ``[start, stop)`` with the same gallery (a shard; it has no fingerprint of its own)."""
        return QueryRange(self, start, stop)

    def limited(self, limit: int) -> "LimitedQueries":
        """The first ``limit`` queries with the whole gallery (its own fingerprint)."""
        return LimitedQueries(self, limit)


class _QueryView(RetrievalDataset):
    """Queries ``[offset, offset + length)`` of ``base``; the gallery is ``base``'s."""

    def __init__(self, base: RetrievalDataset, offset: int, length: int):
        self.base, self.offset, self.length = base, offset, length
        self.name, self.split, self.image_size = base.name, base.split, base.image_size

    def __len__(self) -> int:
        return self.length

    def query_image(self, index: int) -> torch.Tensor:
        return self.base.query_image(self.offset + index)

    def matches(self, index: int) -> tuple[int, ...]:
        return self.base.matches(self.offset + index)

    def sample_id(self, index: int) -> str:
        return self.base.sample_id(self.offset + index)

    def gallery_ids(self) -> list[str]:
        return self.base.gallery_ids()

    def gallery_size(self) -> int:
        return self.base.gallery_size()

    def gallery_image(self, index: int) -> torch.Tensor:
        return self.base.gallery_image(index)

    def gallery_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        return self.base.gallery_batches(batch_size)


class QueryRange(_QueryView):
    """Queries ``[start, stop)`` of another retrieval dataset (a shard), sharing its gallery."""

    def __init__(self, base: RetrievalDataset, start: int, stop: int):
        if not 0 <= start <= stop <= len(base):
            raise SuiteError(f"shard [{start}, {stop}) is outside the dataset's {len(base)} queries")
        super().__init__(base, start, stop - start)
        self.start, self.stop = start, stop

    def fingerprint(self) -> str:  # a shard is part of its cell, whose key holds the whole split's fingerprint
        raise SuiteError("a shard of a dataset has no fingerprint of its own; use the dataset's")


class LimitedQueries(_QueryView):
    """The first ``limit`` queries of another retrieval dataset, with its whole gallery."""

    def __init__(self, base: RetrievalDataset, limit: int):
        limit = validate.integer(limit, "limit", 1)
        super().__init__(base, 0, min(limit, len(base)))
        self.limit = self.length

    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.base.fingerprint()}|limit={self.limit}".encode()).hexdigest()[:16]


class FileRetrieval(RetrievalDataset):
    """Queries and gallery stored as image files, read and resized only when asked for.

    Subclasses fill ``query_paths``, ``query_ids``, ``query_matches``, ``gallery_paths``
    and ``_gallery_ids``.
    """

    query_paths: list[Path]
    query_ids: list[str]
    query_matches: list[tuple[int, ...]]
    gallery_paths: list[Path]
    _gallery_ids: list[str]

    def __len__(self) -> int:
        return len(self.query_ids)

    def query_image(self, index: int) -> torch.Tensor:
        return load_image(self.query_paths[index], self.image_size)

    def matches(self, index: int) -> tuple[int, ...]:
        return self.query_matches[index]

    def sample_id(self, index: int) -> str:
        return self.query_ids[index]

    def gallery_ids(self) -> list[str]:
        return self._gallery_ids

    def gallery_size(self) -> int:
        return len(self._gallery_ids)

    def gallery_image(self, index: int) -> torch.Tensor:
        return load_image(self.gallery_paths[index], self.image_size)


def image_files(folder: Path, what: str, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """The image files directly in ``folder`` (sorted by name; hidden files and other suffixes skipped).

    A missing folder, or one without any image, is a SuiteError naming it.
    """
    if not folder.is_dir():
        raise SuiteError(f"{what}: {str(folder)!r} is not a folder")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes)
    if not files:
        raise SuiteError(f"{what}: {str(folder)!r} holds no image file (expected {', '.join(suffixes)})")
    return files


# ---------------------------------------------------------------------------------------------
# synthetic-copies

#: photographs of each split (those of ``synthetic-2afc``); ``motorcycle_right`` is left out, since
#: as the other half of a stereo pair its crops would be near-copies of ``motorcycle_left``'s
COPY_PHOTOS: dict[str, tuple[str, ...]] = {
    split: tuple(p for p in photos if p != "motorcycle_right.png") for split, photos in PHOTOS.items()
}
COPY_SPLITS = tuple(COPY_PHOTOS)
#: bump when the generated images change
COPIES_VERSION = 1
#: candidate grid cell sides (photograph pixels), largest first; the first that holds enough textured cells wins
CELL_SIDES = (256, 224, 192, 160, 136, 120, 104, 92, 80, 72, 64, 56, 48, 42, 36, 32, 28, 24, 20, 16)
#: the crop edit keeps a square of this fraction of the original's side
CROP_KEEP = (0.6, 0.85)
#: JPEG qualities of the re-encode edit
JPEG_QUALITY = (5, 20)
EDITS = ("crop", "colour", "blur", "text", "jpeg")  # applied in this order


def _grey(photo: Image.Image) -> np.ndarray:
    return np.asarray(photo.convert("L"), dtype=np.float32) / 255.0


def textured_cells(grey: np.ndarray, side: int, offset: tuple[int, int]) -> list[tuple[int, int]]:
    """Top-left corners ``(x, y)`` of the grid cells of ``side`` pixels, starting at ``offset``,
    whose grey-level standard deviation is at least ``MIN_CROP_STD`` (no flat sky or black border)."""
    ox, oy = offset
    ny, nx = (grey.shape[0] - oy) // side, (grey.shape[1] - ox) // side
    if nx == 0 or ny == 0:
        return []
    cells = grey[oy:oy + ny * side, ox:ox + nx * side].reshape(ny, side, nx, side)
    std = cells.std(axis=(1, 3))
    return [(ox + x * side, oy + y * side) for y, x in zip(*np.nonzero(std >= MIN_CROP_STD))]


def _crop(img: Image.Image, rng: np.random.Generator, photo: Image.Image, box: tuple) -> Image.Image:
    """A square of ``CROP_KEEP`` of the original's side at a random place, rescaled back (re-rendered
    from the photograph, i.e. the same region at full resolution)."""
    left, top, right, _ = box
    side = right - left
    keep = rng.uniform(*CROP_KEEP) * side
    x, y = left + rng.uniform(0, side - keep), top + rng.uniform(0, side - keep)
    return Image.fromarray(render(photo, (x, y, x + keep, y + keep), img.width))


def _colour(img: Image.Image, rng: np.random.Generator, *_) -> Image.Image:
    """Brightness, contrast and saturation each scaled by ``1 ± U(0.15, 0.4)`` (Pillow ImageEnhance)."""
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(1 + float(rng.choice((-1, 1))) * rng.uniform(0.15, 0.4))
    return img


def _blur(img: Image.Image, rng: np.random.Generator, *_) -> Image.Image:
    """Gaussian blur of radius ``U(1, 2.5)·size/64`` pixels."""
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 2.5) * img.width / 64))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:  # Pillow >= 10.1 scales its default font when FreeType is available
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _text(img: Image.Image, rng: np.random.Generator, *_) -> Image.Image:
    """4-8 random capitals and digits in Pillow's default font (``U(0.15, 0.3)·size`` high), in a
    random colour with a contrasting outline, at a random place."""
    img = img.copy()
    draw = ImageDraw.Draw(img)
    letters = string.ascii_uppercase + string.digits
    words = "".join(letters[int(k)] for k in rng.integers(len(letters), size=int(rng.integers(4, 9))))
    font = _font(max(8, round(rng.uniform(0.15, 0.3) * img.height)))
    fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
    outline = (0, 0, 0) if sum(fill) > 384 else (255, 255, 255)
    x, y = rng.uniform(-0.1, 0.5) * img.width, rng.uniform(0, 0.7) * img.height
    draw.text((x, y), words, font=font, fill=fill, stroke_width=1, stroke_fill=outline)
    return img


def _jpeg(img: Image.Image, rng: np.random.Generator, *_) -> Image.Image:
    """JPEG re-encode (Pillow, default 4:2:0 chroma) at a quality in ``JPEG_QUALITY``."""
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)))
    buffer.seek(0)
    with Image.open(buffer) as out:
        return out.convert("RGB")


EDIT_FUNCTIONS: dict[str, Callable] = {"crop": _crop, "colour": _colour, "blur": _blur, "text": _text,
                                       "jpeg": _jpeg}


@register_dataset("synthetic-copies")
class SyntheticCopies(RetrievalDataset):
    """Embedded copy-detection set: strongly edited crops of scikit-image photographs among distractor crops.

    Each photograph of the split is cut into a grid of square cells (side: the largest of
    ``CELL_SIDES`` whose textured cells number at least ``originals + distractors``; grid
    offset and cell order drawn from the seed). The first ``originals`` cells of a seeded
    permutation are the originals, the next ``distractors`` the distractors: disjoint regions,
    so no distractor holds a piece of an original. The gallery is originals and distractors
    in a seeded shuffled order (ids ``o0003``, ``d0041``), so index order says nothing.
    Each original has ``queries_per_original`` queries (``q00012``; query ``k`` copies
    original ``k // queries_per_original``), each 2 or 3 distinct edits, applied in the order
    crop (60-85 % of the side, rescaled back), colour jitter, Gaussian blur, overlaid text
    (Pillow's default font), JPEG at quality 5-20; ``edits`` lists them per query.

    Splits ``train``/``val``/``test`` use disjoint photographs (those of ``synthetic-2afc``,
    without ``motorcycle_right``, the stereo twin of ``motorcycle_left``), so no gallery
    image is shared between splits. Everything depends only on the options; the set is
    generated in memory (well under a second at the defaults), no cache file.

    Options: ``split`` (``test``), ``image_size`` (64, at least 16), ``originals`` (24),
    ``queries_per_original`` (2), ``distractors`` (72), ``seed`` (0).
    """

    def __init__(self, split: str = "test", image_size: int = 64, originals: int = 24,
                 queries_per_original: int = 2, distractors: int = 72, seed: int = 0):
        self.split = validate.choice(split, COPY_SPLITS, "synthetic-copies split")
        self.image_size = validate.image_size(image_size, "synthetic-copies")
        if self.image_size < MIN_IMAGE_SIZE:
            raise SuiteError(f"synthetic-copies: image_size must be at least {MIN_IMAGE_SIZE}; got {image_size!r}")
        self.originals = validate.integer(originals, "synthetic-copies: originals", 1)
        self.queries_per_original = validate.integer(queries_per_original, "synthetic-copies: queries_per_original", 1)
        self.distractors = validate.integer(distractors, "synthetic-copies: distractors", 0)
        self.seed = validate.integer(seed, "synthetic-copies: seed", 0)
        self.key = self._key()
        self._generate()

    def _key(self) -> str:
        spec = {"version": COPIES_VERSION, "skimage": skimage.__version__, "photos": COPY_PHOTOS[self.split],
                "split": self.split, "image_size": self.image_size, "originals": self.originals,
                "queries_per_original": self.queries_per_original, "distractors": self.distractors,
                "seed": self.seed}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def _layout(self, rng: np.random.Generator) -> list[tuple[str, tuple[float, float, float, float]]]:
        """``(photograph, box)`` of every gallery crop: originals first, then distractors."""
        needed = self.originals + self.distractors
        photos = COPY_PHOTOS[self.split]
        greys = {name: _grey(load_photo(name)) for name in photos}
        found = 0
        for side in CELL_SIDES:
            cells = []
            for name in photos:
                h, w = greys[name].shape
                offset = (int(rng.integers(0, w % side + 1)), int(rng.integers(0, h % side + 1)))
                cells += [(name, (int(x), int(y), int(x) + side, int(y) + side))
                          for x, y in textured_cells(greys[name], side, offset)]
            found = max(found, len(cells))
            if len(cells) >= needed:
                order = rng.permutation(len(cells))[:needed]
                return [cells[int(k)] for k in order]
        raise SuiteError(f"synthetic-copies: the {self.split} photographs ({', '.join(photos)}) hold at most "
                         f"{found} disjoint textured crops; originals + distractors = {needed}")

    def _generate(self) -> None:
        split_index = COPY_SPLITS.index(self.split)
        rng = np.random.default_rng([self.seed, split_index, 0])
        crops = self._layout(rng)
        kinds = ["o"] * self.originals + ["d"] * self.distractors
        numbers = list(range(self.originals)) + list(range(self.distractors))
        order = rng.permutation(len(crops))  # gallery position -> crop
        images = [render(load_photo(name), box, self.image_size) for name, box in crops]
        self._gallery = torch.from_numpy(np.stack([images[int(k)] for k in order])).permute(0, 3, 1, 2).contiguous()
        self._gallery_ids = [f"{kinds[int(k)]}{numbers[int(k)]:04d}" for k in order]
        self.gallery_sources = [crops[int(k)] for k in order]  # (photograph, box) per gallery item
        position = {int(k): g for g, k in enumerate(order)}
        queries, self.query_matches, self.edits = [], [], []
        for q in range(self.originals * self.queries_per_original):
            original = q // self.queries_per_original
            qrng = np.random.default_rng([self.seed, split_index, 1, q])
            chosen = sorted(qrng.choice(len(EDITS), size=int(qrng.integers(2, 4)), replace=False).tolist())
            photo, box = crops[original]
            img = Image.fromarray(images[original])
            for e in chosen:
                img = EDIT_FUNCTIONS[EDITS[e]](img, qrng, load_photo(photo), box)
            queries.append(np.asarray(img.convert("RGB")))
            self.query_matches.append((position[original],))
            self.edits.append("+".join(EDITS[e] for e in chosen))
        self._queries = torch.from_numpy(np.stack(queries)).permute(0, 3, 1, 2).contiguous()

    def __len__(self) -> int:
        return len(self.query_matches)

    def query_image(self, index: int) -> torch.Tensor:
        return self._queries[index].float() / 255

    def matches(self, index: int) -> tuple[int, ...]:
        return self.query_matches[index]

    def sample_id(self, index: int) -> str:
        return f"q{index:05d}"

    def gallery_ids(self) -> list[str]:
        return list(self._gallery_ids)

    def gallery_size(self) -> int:
        return len(self._gallery_ids)

    def gallery_image(self, index: int) -> torch.Tensor:
        return self._gallery[index].float() / 255

    def gallery_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        batch_size = validate.integer(batch_size, "gallery batch_size", 1)
        for start in range(0, len(self._gallery), batch_size):
            yield self._gallery[start:start + batch_size].float() / 255

    def fingerprint(self) -> str:
        """The ids and matches, plus the generator key (the seed and every option)."""
        return hashlib.sha256(f"{super().fingerprint()}|{self.key}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# copydays

#: the variant folders DINO evaluates (``jpegqual/<q>`` and ``crops/<pct>`` found on disk are all accepted)
COPYDAYS_VARIANTS = ("jpegqual", "crops")


def copydays_block(path: Path) -> int:
    """The Copydays block of an image: ``int(stem) // 100`` (``200001.jpg`` -> 2000)."""
    try:
        return int(path.stem) // 100
    except ValueError:
        raise SuiteError(f"copydays: {str(path)!r} is not named by a Copydays number (expected e.g. 200000.jpg, "
                         "whose block is the number // 100)") from None


def copydays_folders(root: Path, split: str) -> list[str]:
    """The query folders (relative to ``root``) of a split: ``strong``, ``jpegqual/<q>``, ``crops/<pct>``,
    or for ``all`` every one of them found on disk (strong, then jpegqual and crops by number)."""
    if not isinstance(split, str):
        raise SuiteError(f"copydays split must be a string; got {split!r}")
    if split == "all":
        folders = ["strong"] if (root / "strong").is_dir() else []
        for variant in COPYDAYS_VARIANTS:
            base = root / variant
            subs = [p.name for p in base.iterdir() if p.is_dir() and p.name.isdigit()] if base.is_dir() else []
            folders += [f"{variant}/{name}" for name in sorted(subs, key=int)]
        if not folders:
            raise SuiteError(f"copydays: {str(root)!r} holds no query folder (expected strong/, "
                             "jpegqual/<q>/ or crops/<pct>/)")
        return folders
    variant, _, level = split.partition("/")
    if split != "strong" and not (variant in COPYDAYS_VARIANTS and level.isdigit()):
        raise SuiteError(f"copydays split must be strong, jpegqual/<q>, crops/<pct> or all; got {split!r}")
    if not (root / split).is_dir():
        try:
            found = copydays_folders(root, "all")
        except SuiteError:
            found = []
        hint = f"; found: {', '.join(found)}" if found else ""
        raise SuiteError(f"copydays: {str(root / split)!r} is not a folder (split {split!r}){hint}")
    return [split]


@register_dataset("copydays")
class Copydays(FileRetrieval):
    """INRIA Copydays copy detection as DINO evaluates it: originals (+ distractors) as gallery, edited copies as queries.

    Layout (DINO's ``eval_copy_detection.py``): ``root/original/*.jpg`` (157 originals,
    named by number, e.g. ``200000.jpg``), ``root/strong/*.jpg`` (229 strong edits),
    optionally ``root/jpegqual/<q>/*.jpg`` (q = 3, 5, 8, 10, 15, 20, 30, 50, 75) and
    ``root/crops/<pct>/*.jpg`` (pct = 10 ... 80), 157 each. An image's *block* is
    ``int(stem) // 100``; a query's matches are the originals of its block (for ``strong``
    DINO compares the first four characters of the names, the same for Copydays' six-digit
    names; ``jpegqual`` and ``crops`` files carry their original's name, so this is DINO's
    one-to-one pairing). As in DINO the gallery is the originals only (sorted by name),
    then the images of the ``distractors`` folder (DINO: 10k YFCC100M images; any of
    IMAGE_SUFFIXES), sorted by name. Splits: ``strong`` (default), ``jpegqual/<q>``,
    ``crops/<pct>``, ``all`` (every query folder present). Ids are paths relative to their
    folder's parent: ``strong/200001.jpg``, ``original/200000.jpg``, ``distractors/x.jpg``.
    Images are resized to a square ``image_size`` (DINO uses 320). ``whitening`` (DINO's
    PCA whitening learned on 20k YFCC images) is accepted but not used (a warning says so).

    Options: ``root`` (required), ``split`` (``strong``), ``image_size`` (224),
    ``distractors`` (a folder, none), ``whitening`` (ignored).
    """

    def __init__(self, root: str | Path | None = None, split: str = "strong", image_size: int = 224,
                 distractors: str | Path | None = None, whitening: str | Path | None = None):
        self.root = check_root(root, "copydays")
        self.image_size = validate.image_size(image_size, "copydays")
        folders = copydays_folders(self.root, split)
        self.split = split
        if whitening is not None:
            warnings.warn("copydays: the option whitening is not used (no PCA whitening is applied)", stacklevel=2)
        originals = image_files(self.root / "original", "copydays originals", (".jpg", ".jpeg"))
        self.gallery_paths = list(originals)
        self._gallery_ids = [f"original/{p.name}" for p in originals]
        by_block: dict[int, list[int]] = {}
        for g, path in enumerate(originals):
            by_block.setdefault(copydays_block(path), []).append(g)
        if distractors is not None:
            folder = Path(distractors).expanduser()
            extra = image_files(folder, "copydays distractors")
            self.gallery_paths += extra
            self._gallery_ids += [f"distractors/{p.name}" for p in extra]
        self.query_paths, self.query_ids, self.query_matches = [], [], []
        for folder in folders:
            for path in image_files(self.root / folder, f"copydays split {split!r}", (".jpg", ".jpeg")):
                block = copydays_block(path)
                if block not in by_block:
                    raise SuiteError(f"copydays: query {str(path)!r} (block {block}) has no original in "
                                     f"{str(self.root / 'original')!r}")
                self.query_paths.append(path)
                self.query_ids.append(f"{folder}/{path.name}")
                self.query_matches.append(tuple(by_block[block]))


# ---------------------------------------------------------------------------------------------
# image-pairs

PAIRS_COLUMNS = ("query", "original")


def read_pairs(csv_path: Path) -> list[tuple[int, str, str]]:
    """``(row number, query, original)`` of ``matches.csv`` (header ``query,original``; blanks stripped)."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if [c.strip() for c in reader.fieldnames or ()][:2] != list(PAIRS_COLUMNS):
                raise SuiteError(f"image-pairs: {str(csv_path)!r} must start with the header query,original; "
                                 f"got {','.join(reader.fieldnames or ()) or 'nothing'}")
            reader.fieldnames = [c.strip() for c in reader.fieldnames]
            rows = [(n, (r["query"] or "").strip(), (r["original"] or "").strip())
                    for n, r in enumerate(reader, start=2)]
    except FileNotFoundError:
        raise SuiteError(f"image-pairs: {str(csv_path)!r} not found (root must hold matches.csv "
                         "with the header query,original)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SuiteError(f"image-pairs: cannot read {str(csv_path)!r}: {err}") from None
    return rows


@register_dataset("image-pairs")
class ImagePairs(FileRetrieval):
    """Your own copy-detection set: root/gallery/*, root/queries/* and root/matches.csv (query,original).

    ``matches.csv`` has the header ``query,original`` and one row per (query file name,
    gallery file name) pair; a query may have several rows (several originals), and a query
    with no row (or only rows with an empty ``original``) has no match. Every image directly
    in ``gallery/`` and ``queries/`` (suffixes IMAGE_SUFFIXES, sorted by name) is used; ids
    are the file names. Images are resized to a square ``image_size``.

    Options: ``root`` (required), ``split`` (only ``test``), ``image_size`` (224).
    """

    def __init__(self, root: str | Path | None = None, split: str = "test", image_size: int = 224):
        self.root = check_root(root, "image-pairs")
        self.split = validate.choice(split, ("test",), "image-pairs split")
        self.image_size = validate.image_size(image_size, "image-pairs")
        self.gallery_paths = image_files(self.root / "gallery", "image-pairs gallery")
        self.query_paths = image_files(self.root / "queries", "image-pairs queries")
        self._gallery_ids = [p.name for p in self.gallery_paths]
        self.query_ids = [p.name for p in self.query_paths]
        gallery = {name: g for g, name in enumerate(self._gallery_ids)}
        found: dict[str, set[int]] = {name: set() for name in self.query_ids}
        csv_path = self.root / "matches.csv"
        for row, query, original in read_pairs(csv_path):
            if query not in found:
                raise SuiteError(f"image-pairs: {str(csv_path)!r} row {row}: query {query!r} not found in "
                                 f"{str(self.root / 'queries')!r}")
            if original and original not in gallery:
                raise SuiteError(f"image-pairs: {str(csv_path)!r} row {row}: original {original!r} of query "
                                 f"{query!r} not found in {str(self.root / 'gallery')!r}")
            if original:
                found[query].add(gallery[original])
        self.query_matches = [tuple(sorted(found[name])) for name in self.query_ids]


__all__ = ["RetrievalDataset", "QueryRange", "LimitedQueries", "FileRetrieval", "SyntheticCopies", "Copydays",
           "ImagePairs", "image_files"]
