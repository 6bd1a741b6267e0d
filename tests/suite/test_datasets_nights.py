"""The ``nights`` loader on a tiny NIGHTS-shaped folder: columns by name, splits, votes filter, judges, errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from suite.datasets import load
from suite.errors import SuiteError

COLUMNS = ["id", "left_vote", "right_vote", "votes", "ref_path", "left_path", "right_path", "prompt", "split", "is_imagenet"]
# id, right_vote, votes, split, is_imagenet
ROWS = [
    ("0", 0.0, 6, "train", "False"),
    ("1", 1.0, 7, "val", "True"),
    ("2", 0.25, 8, "test", "True"),
    ("3", 1.0, 6, "test", "False"),
    ("4", 0.5, 4, "test", "True"),  # too few votes
    ("5", 0.75, 8, "test", "false"),
]


def write_csv(root: Path, rows: list[dict], columns: list[str]) -> None:
    with open(root / "data.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def make_rows(counts: bool = False) -> list[dict]:
    rows = []
    for id_, right, votes, split, imagenet in ROWS:
        scale = votes if counts else 1
        rows.append(
            {
                "id": id_,
                "left_vote": (1 - right) * scale,
                "right_vote": right * scale,
                "votes": votes,
                "ref_path": f"ref/{id_}.png",
                "left_path": f"distort/{id_}_0.png",
                "right_path": f"distort/{id_}_1.png",
                "prompt": "a photo, of something",
                "split": split,
                "is_imagenet": imagenet,
            }
        )
    return rows


@pytest.fixture
def root(tmp_path) -> Path:
    """NIGHTS layout: data.csv (columns shuffled, one extra) and RGB, RGBA and greyscale 20×20 images."""
    (tmp_path / "ref").mkdir()
    (tmp_path / "distort").mkdir()
    rng = np.random.default_rng(0)
    for row in make_rows():
        for column, channels in (("ref_path", 3), ("left_path", 4), ("right_path", 1)):
            shape = (20, 20, channels) if channels > 1 else (20, 20)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(tmp_path / row[column])
    write_csv(tmp_path, make_rows(), ["extra", *reversed(COLUMNS)])
    return tmp_path


def ids(ds) -> list[str]:
    return [ds.sample_id(i) for i in range(len(ds))]


def test_items_follow_the_dataset_contract(root):
    ds = load("nights", root=root, image_size=24)
    assert (ds.name, ds.split, ds.image_size) == ("nights", "test", 24)
    ref, x0, x1, judge, sample_id = ds[0]
    for img in (ref, x0, x1):
        assert img.shape == (3, 24, 24) and img.dtype == torch.float32
        assert 0 <= img.min() and img.max() <= 1
    assert (judge, sample_id) == (0.25, "nights/2")
    assert torch.equal(x1[0], x1[1]), "greyscale is repeated over RGB"
    assert load("nights", root=str(root), limit=1)[0][0].shape == (3, 224, 224)


@pytest.mark.parametrize(
    "split, expected",
    [
        ("train", ["nights/0"]),
        ("val", ["nights/1"]),
        ("test", ["nights/2", "nights/3", "nights/5"]),
        ("test_imagenet", ["nights/2"]),
        ("test_no_imagenet", ["nights/3", "nights/5"]),
    ],
)
def test_split_membership_and_votes_filter(root, split, expected):
    assert ids(load("nights", root=root, split=split)) == expected


def test_min_votes_option(root):
    assert ids(load("nights", root=root, min_votes=0)) == ["nights/2", "nights/3", "nights/4", "nights/5"]
    assert ids(load("nights", root=root, min_votes=8)) == ["nights/2", "nights/5"]


def test_judge_is_the_right_vote_fraction_or_count_over_votes(root):
    fractions = load("nights", root=root, min_votes=0)
    assert [fractions[i][3] for i in range(4)] == [0.25, 1.0, 0.5, 0.75]
    write_csv(root, make_rows(counts=True), COLUMNS)
    counts = load("nights", root=root, min_votes=0)
    assert [counts[i][3] for i in range(4)] == pytest.approx([0.25, 1.0, 0.5, 0.75])


def test_bad_root_and_missing_csv(tmp_path):
    with pytest.raises(SuiteError, match="root"):
        load("nights")
    with pytest.raises(SuiteError, match="nowhere"):
        load("nights", root=tmp_path / "nowhere")
    with pytest.raises(SuiteError, match="data.csv"):
        load("nights", root=tmp_path)


def test_missing_column_is_named(root):
    write_csv(root, [{k: v for k, v in r.items() if k != "votes"} for r in make_rows()], [c for c in COLUMNS if c != "votes"])
    with pytest.raises(SuiteError, match="lacks the columns votes"):
        load("nights", root=root)


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"split": "testing"}, "'testing'"),
        ({"min_votes": 100}, "no triplet in split 'test'"),
        ({"min_votes": -1}, "min_votes"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": 22.5}, "22.5"),
    ],
)
def test_bad_options(root, options, needle):
    with pytest.raises(SuiteError, match=needle):
        load("nights", root=root, **options)


def test_missing_images_are_counted_and_the_first_named(root):
    (root / "distort" / "3_0.png").unlink()
    (root / "distort" / "5_1.png").unlink()
    with pytest.raises(SuiteError, match=r"2 of 9 image files are missing; first: .*3_0\.png"):
        load("nights", root=root)
    assert len(load("nights", root=root, split="train")) == 1


def test_unreadable_image_names_its_path(root):
    (root / "ref" / "3.png").write_bytes(b"garbage")
    ds = load("nights", root=root)
    with pytest.raises(SuiteError, match=r"cannot read image .*3\.png"):
        ds[1]


@pytest.mark.parametrize(
    "column, value, needle",
    [
        ("is_imagenet", "maybe", "is_imagenet must be True or False; got 'maybe'"),
        ("votes", "six", "votes must be a number; got 'six'"),
        ("right_vote", "1.5", "must be whole counts"),
        ("right_vote", "-0.5", "outside"),
        ("id", "5", "id '5' appears twice"),
    ],
)
def test_bad_cells_name_the_row(root, column, value, needle):
    rows = make_rows()
    rows[2][column] = value
    write_csv(root, rows, COLUMNS)
    with pytest.raises(SuiteError, match=needle) as info:
        load("nights", root=root, split="test_imagenet" if column == "is_imagenet" else "test")
    assert "data.csv" in str(info.value) and "\n" not in str(info.value)


def test_short_row_is_an_error(root):
    with open(root / "data.csv", "a") as f:
        f.write("9,0,1\n")
    with pytest.raises(SuiteError, match="data row 7 has fewer fields"):
        load("nights", root=root)
