"""The ``bapps`` loader on a tiny BAPPS-shaped folder: pairing by stem, splits, judges, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from suite.datasets import load
from suite.errors import SuiteError

# part -> category -> stems; stems are not zero-padded, so listing order and numeric order differ
LAYOUT = {"val": {"cnn": ["7", "10", "123"], "traditional": ["2", "30"]}, "train": {"mix": ["1"]}}


def colour(category: str, stem: str, folder: str) -> int:
    """A grey level that identifies one image of the fixture."""
    return (sum(map(ord, category)) + 7 * int(stem) + 50 * ("ref", "p0", "p1").index(folder)) % 256


def judge_value(stem: str) -> float:
    return int(stem) / 200


def write_image(path: Path, level: int) -> None:
    Image.new("RGB", (16, 16), (level, level, level)).save(path)


@pytest.fixture
def root(tmp_path) -> Path:
    """BAPPS layout with uniform-grey patches whose level encodes (category, stem, folder).

    Files are written in a different order in each folder, p0 uses .bmp, and p1 holds an unrelated file.
    """
    for part, categories in LAYOUT.items():
        for category, stems in categories.items():
            base = tmp_path / "2afc" / part / category
            for k, folder in enumerate(("ref", "p0", "p1", "judge")):
                (base / folder).mkdir(parents=True)
                for stem in stems[k % len(stems):] + stems[: k % len(stems)]:
                    if folder == "judge":
                        np.save(base / folder / f"{stem}.npy", np.array([judge_value(stem)], dtype=np.float32))
                    else:
                        suffix = ".bmp" if folder == "p0" else ".png"
                        write_image(base / folder / f"{stem}{suffix}", colour(category, stem, folder))
            (base / "p1" / "notes.txt").write_text("not a patch")
    return tmp_path


def ids(ds) -> list[str]:
    return [ds.sample_id(i) for i in range(len(ds))]


def test_files_are_paired_by_stem(root):
    ds = load("bapps", root=root, split="val/all", image_size=8)
    assert len(ds) == 5
    for i in range(len(ds)):
        ref, x0, x1, judge, sample_id = ds[i]
        _, part, category, stem = sample_id.split("/")
        for img, folder in ((ref, "ref"), (x0, "p0"), (x1, "p1")):
            expected = torch.full((3, 8, 8), colour(category, stem, folder) / 255)
            assert torch.allclose(img, expected, atol=1e-6), (sample_id, folder)
        assert judge == pytest.approx(judge_value(stem))


def test_items_follow_the_dataset_contract(root):
    ds = load("bapps", root=root, split="val/cnn")
    assert (ds.name, ds.split, ds.image_size) == ("bapps", "val/cnn", 224)
    ref, x0, x1, judge, sample_id = ds[0]
    assert ref.shape == x0.shape == x1.shape == (3, 224, 224) and ref.dtype == torch.float32
    assert isinstance(judge, float) and sample_id == "bapps/val/cnn/10"


@pytest.mark.parametrize(
    "split, normalised, expected",
    [
        ("val", "val/all", ["val/cnn/10", "val/cnn/123", "val/cnn/7", "val/traditional/2", "val/traditional/30"]),
        ("val/all", "val/all", ["val/cnn/10", "val/cnn/123", "val/cnn/7", "val/traditional/2", "val/traditional/30"]),
        ("val/traditional", "val/traditional", ["val/traditional/2", "val/traditional/30"]),
        ("train", "train/all", ["train/mix/1"]),
        ("train/mix", "train/mix", ["train/mix/1"]),
    ],
)
def test_splits(root, split, normalised, expected):
    ds = load("bapps", root=root, split=split, image_size=8)
    assert ds.split == normalised
    assert ids(ds) == [f"bapps/{e}" for e in expected]


@pytest.mark.parametrize("folder, stem", [("p1", "123"), ("judge", "7"), ("ref", "10")])
def test_a_missing_stem_is_named(root, folder, stem):
    category = root / "2afc" / "val" / "cnn"
    next((category / folder).glob(f"{stem}.*")).unlink()
    with pytest.raises(SuiteError, match=rf"stem '{stem}' has no file in .*cnn/{folder} \(1 of 3 stems are incomplete\)"):
        load("bapps", root=root, split="val/cnn")


def test_an_extra_stem_is_named(root):
    write_image(root / "2afc" / "val" / "cnn" / "p0" / "999.png", 0)
    with pytest.raises(SuiteError, match=r"stem '999' has no file in .*cnn/ref, .*cnn/p1, .*cnn/judge"):
        load("bapps", root=root, split="val")


def test_two_files_with_one_stem(root):
    write_image(root / "2afc" / "val" / "cnn" / "ref" / "7.bmp", 0)
    with pytest.raises(SuiteError, match=r"two files with stem '7' in .*cnn/ref"):
        load("bapps", root=root, split="val/cnn")


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"split": "test"}, "got 'test'"),
        ({"split": "val/cnn/x"}, "got 'val/cnn/x'"),
        ({"split": 3}, "got 3"),
        ({"split": "val/superres"}, "no category 'superres' in .*val'; found: cnn, traditional"),
        ({"image_size": -4}, "image_size"),
    ],
)
def test_bad_options(root, options, needle):
    with pytest.raises(SuiteError, match=needle):
        load("bapps", root=root, **options)


def test_bad_layouts(root, tmp_path_factory):
    with pytest.raises(SuiteError, match="root"):
        load("bapps", split="val")
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(SuiteError, match=rf"{empty}/2afc/val' is not a folder"):
        load("bapps", root=empty)
    (empty / "2afc" / "val").mkdir(parents=True)
    with pytest.raises(SuiteError, match="holds no category folder"):
        load("bapps", root=empty)
    (empty / "2afc" / "val" / "cnn").mkdir()
    with pytest.raises(SuiteError, match=r"cnn/ref' is not a folder"):
        load("bapps", root=empty)
    for folder in ("ref", "p0", "p1", "judge"):
        (empty / "2afc" / "val" / "cnn" / folder).mkdir()
    with pytest.raises(SuiteError, match="holds no triplet"):
        load("bapps", root=empty)


@pytest.mark.parametrize(
    "content, needle",
    [
        (np.array([0.5, 0.5]), "must hold one number"),
        (np.array([1.5]), "holds 1.5, outside"),
        (np.array(["a"]), "must hold one number"),
        (b"garbage", "cannot read judge file"),
    ],
)
def test_bad_judge_files_are_named(root, content, needle):
    path = root / "2afc" / "val" / "cnn" / "judge" / "10.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    with pytest.raises(SuiteError, match=rf"{needle}") as info:
        load("bapps", root=root, split="val/cnn")
    assert "10.npy" in str(info.value)


def test_unreadable_patch_names_its_path(root):
    (root / "2afc" / "val" / "cnn" / "p1" / "10.png").write_bytes(b"garbage")
    ds = load("bapps", root=root, split="val/cnn", image_size=8)
    with pytest.raises(SuiteError, match=r"cannot read image .*cnn/p1/10\.png"):
        ds[0]
