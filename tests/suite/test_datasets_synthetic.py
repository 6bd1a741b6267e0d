"""The embedded ``synthetic-2afc`` set: contract, splits by photograph, determinism, judges, cache, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import metrics
from suite.datasets import load
from suite.datasets import synthetic as syn
from suite.errors import SuiteError
from suite.scoring import twoafc_score


def test_items_follow_the_dataset_contract(cache_dir):
    ds = load("synthetic-2afc", count=12)
    assert (ds.name, ds.split, ds.image_size, len(ds)) == ("synthetic-2afc", "test", 64, 12)
    ref, x0, x1, judge, sample_id = ds[3]
    for img in (ref, x0, x1):
        assert img.shape == (3, 64, 64) and img.dtype == torch.float32
        assert 0 <= img.min() and img.max() <= 1
    assert isinstance(judge, float) and 0 < judge < 1
    assert sample_id == "synthetic/test/000003"
    batch = next(ds.batches(5))
    assert batch.ref.shape == (5, 3, 64, 64) and batch.judge.shape == (5,)
    with pytest.raises(IndexError):
        ds[12]


def test_photographs_are_colour_and_no_split_shares_one():
    names = [n for split in syn.SPLITS for n in syn.PHOTOS[split]]
    assert len(names) == len(set(names)) == 9
    for name in names:
        with Image.open(syn.photo_path(name)) as img:
            assert img.mode == "RGB", name
        pixels = np.asarray(syn.load_photo(name), dtype=np.int16)
        assert np.abs(pixels[..., 0] - pixels[..., 1]).mean() > 1, f"{name} is grey"


@pytest.mark.parametrize("split", syn.SPLITS)
def test_triplets_use_only_their_splits_photographs(cache_dir, split):
    ds = load("synthetic-2afc", split=split, count=40, image_size=16)
    assert set(ds.photos) <= set(syn.PHOTOS[split])
    assert ds.sample_id(0) == f"synthetic/{split}/000000"


def test_same_seed_same_tensors_other_seed_other_tensors(tmp_path):
    a = load("synthetic-2afc", count=16, cache_dir=tmp_path / "a")
    b = load("synthetic-2afc", count=16, cache_dir=tmp_path / "b")
    c = load("synthetic-2afc", count=16, seed=1, cache_dir=tmp_path / "c")
    prefix = load("synthetic-2afc", count=8, cache_dir=tmp_path / "d")
    for key in ("ref", "x0", "x1", "judge"):
        assert torch.equal(getattr(a, key), getattr(b, key))
        assert not torch.equal(getattr(a, key), getattr(c, key))
        assert torch.equal(getattr(a, key)[:8], getattr(prefix, key))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_judge_is_a_logistic_of_the_strength_gap(cache_dir):
    assert syn.judge_from_strengths(0.4, 0.4) == 0.5
    assert syn.judge_from_strengths(0.9, 0.1) == pytest.approx(1 / (1 + math.exp(-8)))
    ds = load("synthetic-2afc", count=64, image_size=16)
    s0, s1 = ds.strengths[:, 0].double(), ds.strengths[:, 1].double()
    expected = torch.sigmoid(syn.JUDGE_SLOPE * (s0 - s1))
    assert torch.allclose(ds.judge.double(), expected, atol=1e-6)
    near = (s0 - s1).abs() < 0.05
    assert near.any() and ((ds.judge[near] - 0.5).abs() < 0.13).all()


@pytest.mark.parametrize("family", list(syn.FAMILIES))
def test_family_is_identity_at_zero_and_grows_with_strength(family):
    rng = np.random.default_rng(3)
    _, scene = syn.draw_scene(rng, syn.PHOTOS["test"], 32)
    distort = syn.FAMILIES[family]
    assert np.array_equal(distort(scene, 0.0, rng), scene.ref)
    weak, strong = (np.abs(distort(scene, s, rng).astype(float) - scene.ref).sum() for s in (0.3, 1.0))
    assert 0 < weak < strong


def test_classic_metrics_beat_chance_clearly(cache_dir):
    batch = next(load("synthetic-2afc").batches(256))
    for name in ("l2", "psnr", "ssim"):
        metric = metrics.load(name)
        with torch.no_grad():
            score = twoafc_score(metric.distance(batch.ref, batch.x0), metric.distance(batch.ref, batch.x1), batch.judge)
        assert score.mean() > 0.75, name


def test_cache_file_is_reused(cache_dir, monkeypatch):
    first = load("synthetic-2afc", count=8, image_size=16)
    path = first.cache_path
    assert path.parent == cache_dir and path.is_file()
    assert not list(cache_dir.glob("*.tmp"))

    def no_generation(*args):
        raise AssertionError("the cached file should have been used")

    monkeypatch.setattr(syn, "generate", no_generation)
    again = load("synthetic-2afc", count=8, image_size=16)
    assert again.cache_path == path and torch.equal(again.x1, first.x1)
    with pytest.raises(AssertionError):
        load("synthetic-2afc", count=8, image_size=16, seed=5)


def test_corrupt_cache_is_regenerated(cache_dir):
    path = load("synthetic-2afc", count=4, image_size=16).cache_path
    clean = torch.load(path, weights_only=True)
    path.write_bytes(b"not a torch file")
    again = load("synthetic-2afc", count=4, image_size=16)
    assert torch.equal(again.ref, clean["ref"])
    assert torch.load(path, weights_only=True)["judge"].shape == (4,)


def test_unwritable_cache_warns_and_still_works(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="cannot write the cache"):
        ds = load("synthetic-2afc", count=2, image_size=16, cache_dir=blocker)
    assert len(ds) == 2


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"split": "tset"}, "'tset'"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": 8}, "at least 16"),
        ({"image_size": "64"}, "'64'"),
        ({"count": 0}, "count"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"colour": True}, "colour"),
    ],
)
def test_bad_options_are_one_line_suite_errors(cache_dir, options, needle):
    with pytest.raises(SuiteError, match=needle) as info:
        load("synthetic-2afc", **options)
    assert "\n" not in str(info.value)
