"""``bapps``: the 2AFC part of the Berkeley-Adobe Perceptual Patch Similarity set (LPIPS, Zhang et al. 2018).

Layout ``root/2afc/{train,val}/<category>/{ref,p0,p1,judge}/``: image patches in
``ref``, ``p0``, ``p1`` and, in ``judge``, one ``.npy`` per triplet holding the
fraction of people who preferred ``p1`` (a one-element array). The four files of a
triplet share a file stem and are paired by it, never by position; a stem absent
from any of the four folders is an error naming it. ``x0 = p0``, ``x1 = p1``.
The 64-pixel patches are resized to ``image_size`` (224 as in LipSim).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from suite import validate
from suite.datasets.base import FileTriplets
from suite.datasets.images import check_root
from suite.errors import SuiteError
from suite.registry import register_dataset

PARTS = ("train", "val")
IMAGE_FOLDERS = ("ref", "p0", "p1")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def parse_split(split) -> tuple[str, str]:
    """``"val/cnn"`` -> ``("val", "cnn")``; ``"val"`` means ``"val/all"``."""
    part, _, category = split.partition("/") if isinstance(split, str) else ("", "", "")
    if part not in PARTS or "/" in category:
        raise SuiteError(f"bapps split must be train or val, optionally followed by /<category> or /all; got {split!r}")
    return part, category or "all"


def category_folders(root: Path, part: str, category: str) -> list[Path]:
    """The folders ``root/2afc/<part>/<category>``, all of them (sorted) for ``category == "all"``."""
    base = root / "2afc" / part
    if not base.is_dir():
        raise SuiteError(f"bapps: {str(base)!r} is not a folder (expected root/2afc/{part}/<category>/)")
    available = sorted(p.name for p in base.iterdir() if p.is_dir())
    if category == "all":
        if not available:
            raise SuiteError(f"bapps: {str(base)!r} holds no category folder")
        return [base / name for name in available]
    if category not in available:
        raise SuiteError(f"bapps: no category {category!r} in {str(base)!r}; found: {', '.join(available) or 'none'}")
    return [base / category]


def files_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """``{stem: path}`` of the files in ``folder`` ending in one of ``suffixes``; other files are ignored."""
    if not folder.is_dir():
        raise SuiteError(f"bapps: {str(folder)!r} is not a folder (expected ref, p0, p1 and judge side by side)")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in suffixes or path.name.startswith("."):
            continue
        if path.stem in found:
            names = f"{found[path.stem].name}, {path.name}"
            raise SuiteError(f"bapps: two files with stem {path.stem!r} in {str(folder)!r}: {names}")
        found[path.stem] = path
    return found


def paired_files(category: Path) -> list[tuple[str, Path, Path, Path, Path]]:
    """``(stem, ref, p0, p1, judge)`` for every stem of ``category``, sorted by stem.

    The stems of the four folders must be the same set; otherwise the error names
    the first stem that some folder lacks, the folder, and how many stems are incomplete.
    """
    folders = {name: files_by_stem(category / name, IMAGE_SUFFIXES) for name in IMAGE_FOLDERS}
    folders["judge"] = files_by_stem(category / "judge", (".npy",))
    stems = sorted(set().union(*folders.values()))
    incomplete = [s for s in stems if any(s not in files for files in folders.values())]
    if incomplete:
        stem = incomplete[0]
        lacking = [name for name, files in folders.items() if stem not in files]
        raise SuiteError(
            f"bapps: stem {stem!r} has no file in {', '.join(str(category / n) for n in lacking)} "
            f"({len(incomplete)} of {len(stems)} stems are incomplete)"
        )
    return [(s, *(folders[n][s] for n in (*IMAGE_FOLDERS, "judge"))) for s in stems]


def read_judge(path: Path) -> float:
    """The fraction preferring ``p1`` stored in ``path``: a one-element array with a value in [0, 1]."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise SuiteError(f"bapps: cannot read judge file {str(path)!r}: {err}") from None
    if not isinstance(array, np.ndarray) or array.size != 1 or not np.issubdtype(array.dtype, np.number):
        raise SuiteError(f"bapps: judge file {str(path)!r} must hold one number; got {getattr(array, 'shape', '?')}")
    value = float(array.reshape(()))
    if not 0 <= value <= 1:
        raise SuiteError(f"bapps: judge file {str(path)!r} holds {value}, outside [0, 1]")
    return value


@register_dataset("bapps", aliases=("bapps-2afc",))
class Bapps(FileTriplets):
    """BAPPS 2AFC patches (LPIPS), from root/2afc/{train,val}/<category>; split like val/cnn or val/all."""

    def __init__(self, root: str | Path | None = None, split: str = "val/all", image_size: int = 224):
        self.root = check_root(root, "bapps")
        part, category = parse_split(split)
        self.split = f"{part}/{category}"
        self.image_size = validate.image_size(image_size, "bapps")
        self.ids: list[str] = []
        self.paths: list[tuple[Path, Path, Path]] = []
        self.judges: list[float] = []
        for folder in category_folders(self.root, part, category):
            for stem, ref, p0, p1, judge in paired_files(folder):
                self.ids.append(f"bapps/{part}/{folder.name}/{stem}")
                self.paths.append((ref, p0, p1))
                self.judges.append(read_judge(judge))
        if not self.ids:
            raise SuiteError(f"bapps: split {self.split!r} under {str(self.root)!r} holds no triplet")
