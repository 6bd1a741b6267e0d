"""Shared helpers of the file-based datasets: option checks and image loading.

Every failure is a :class:`~suite.errors.SuiteError` with one line naming the
path or value and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image

from suite.errors import SuiteError

#: Pillow modes holding 16-bit (or wider) integer greyscale; scaled by 1/65535
_WIDE_GREY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def check_root(root, dataset: str) -> Path:
    """The dataset folder as a :class:`Path`; a missing option or folder is a SuiteError."""
    if root is None or str(root) == "":
        raise SuiteError(f"{dataset}: the option root (the dataset folder) is required")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise SuiteError(f"{dataset}: root {str(path)!r} is not a folder")
    return path


def check_files_exist(paths: Iterable[Path], what: str) -> None:
    """SuiteError naming the first missing file and how many of ``paths`` are missing."""
    paths = list(paths)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise SuiteError(f"{what}: {len(missing)} of {len(paths)} image files are missing; first: {str(missing[0])!r}")


def load_image(path: Path | str, image_size: int) -> torch.Tensor:
    """Read an image file as a float tensor ``(3, image_size, image_size)`` in ``[0, 1]``, RGB.

    Pillow's bicubic resampling (antialiased when shrinking) resizes to a square,
    as DreamSim and LipSim do. Alpha is dropped, greyscale is repeated over the
    three channels, 16-bit greyscale is scaled by 1/65535. An unreadable file is a
    SuiteError naming it.
    """
    try:
        with Image.open(path) as img:
            img.load()
            array = _resized_rgb(img, image_size)
    except FileNotFoundError:
        raise SuiteError(f"cannot read image {str(path)!r}: no such file") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SuiteError(f"cannot read image {str(path)!r}: {reason}") from None
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _resized_rgb(img: Image.Image, image_size: int) -> np.ndarray:
    """``(S, S, 3)`` float32 in ``[0, 1]`` from an opened Pillow image of any common mode."""
    size = (image_size, image_size)
    if img.mode in _WIDE_GREY_MODES:
        grey = Image.fromarray(np.asarray(img, dtype=np.float32) / 65535.0)
        plane = np.clip(np.asarray(grey.resize(size, Image.Resampling.BICUBIC)), 0.0, 1.0)
        return np.repeat(plane[:, :, None], 3, axis=2)
    rgb = img.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.float32) / 255.0
