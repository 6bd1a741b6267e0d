"""Retrieval datasets: the contract, ``synthetic-copies``, ``copydays`` and ``image-pairs`` on tiny layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from suite.datasets import RetrievalDataset, TwoAFCDataset, load
from suite.datasets import retrieval as ret
from suite.errors import SuiteError
from suite.registry import Registry
from suite.types import Queries


@pytest.fixture(scope="module")
def copies():
    """The default test split of synthetic-copies (built once for the module)."""
    return load("synthetic-copies", split="test")


def gallery(ds) -> torch.Tensor:
    return torch.cat(list(ds.gallery_batches(40)))


def queries(ds) -> torch.Tensor:
    return torch.stack([ds[i][0] for i in range(len(ds))])


# ---------------------------------------------------------------------------- synthetic-copies


def test_synthetic_copies_follow_the_contract(copies):
    ds = copies
    assert (ds.name, ds.split, ds.image_size, ds.task) == ("synthetic-copies", "test", 64, "retrieval")
    assert isinstance(ds, RetrievalDataset) and TwoAFCDataset.task == "2afc"
    assert (len(ds), ds.gallery_size(), len(ds.gallery_ids())) == (48, 96, 96)
    image, matches, query_id = ds[12]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert query_id == "q00012" and ds.sample_id(12) == "q00012"
    assert isinstance(matches, tuple) and len(matches) == 1
    ids = ds.gallery_ids()
    assert sum(i.startswith("o") for i in ids) == 24 and sum(i.startswith("d") for i in ids) == 72
    assert "o0003" in ids and "d0041" in ids and len(set(ids)) == 96
    g, q = gallery(ds), queries(ds)
    assert g.shape == (96, 3, 64, 64) and q.shape == (48, 3, 64, 64)
    for x in (g, q):
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    with pytest.raises(IndexError):
        ds[48]


def test_every_query_copies_its_original_and_each_original_has_its_queries(copies):
    ds = copies
    ids, g = ds.gallery_ids(), gallery(ds)
    for i in range(len(ds)):
        image, (match,), _ = ds[i]
        assert ids[match] == f"o{i // 2:04d}"  # query k copies original k // queries_per_original
        assert not torch.equal(image, g[match])
        assert ds.gallery_sources[match] == ds.gallery_sources[ids.index(f"o{i // 2:04d}")]

    def small(x):  # 8×8, zero mean, unit spread: blind to brightness and contrast
        s = F.adaptive_avg_pool2d(x, 8)
        s = s - s.mean(dim=(2, 3), keepdim=True)
        return s / (s.std(dim=(1, 2, 3), keepdim=True) + 1e-6)

    distractors = torch.tensor([j for j, name in enumerate(ids) if name.startswith("d")])
    gs, closer = small(g), []
    for i in range(len(ds)):
        image, (match,), _ = ds[i]
        d = (small(image[None]) - gs).abs().mean(dim=(1, 2, 3))
        closer.append(float((d[distractors] < d[match]).float().mean()))
        if "crop" not in ds.edits[i]:  # the layout is kept: nearer than nearly every distractor
            assert closer[-1] < 0.25, (i, ds.edits[i])
    assert max(closer) < 0.5 and np.mean(closer) < 0.1  # cropped copies too, nearer than most


def test_edits_are_strong_combinations(copies):
    for edits in copies.edits:
        names = edits.split("+")
        assert 2 <= len(names) <= 3 and set(names) <= set(ret.EDITS)
    used = {name for edits in copies.edits for name in edits.split("+")}
    assert used == set(ret.EDITS)


def test_synthetic_copies_are_deterministic_per_seed(copies):
    again = load("synthetic-copies", split="test")
    other = load("synthetic-copies", split="test", seed=1)
    assert torch.equal(gallery(copies), gallery(again)) and torch.equal(queries(copies), queries(again))
    assert copies.gallery_ids() == again.gallery_ids() and copies.fingerprint() == again.fingerprint()
    assert not torch.equal(gallery(copies), gallery(other))
    assert not torch.equal(queries(copies), queries(other))
    assert copies.fingerprint() != other.fingerprint()


def test_splits_share_no_photograph_and_no_gallery_image():
    a = load("synthetic-copies", split="train", image_size=32, originals=8, distractors=16)
    b = load("synthetic-copies", split="test", image_size=32, originals=8, distractors=16)
    assert not {p for p, _ in a.gallery_sources} & {p for p, _ in b.gallery_sources}
    assert {p for p, _ in b.gallery_sources} <= set(ret.COPY_PHOTOS["test"])
    ga, gb = gallery(a).flatten(1), gallery(b).flatten(1)
    assert torch.cdist(ga, gb).min() > 0
    assert len(set(b.gallery_sources)) == b.gallery_size()  # distinct crops within a split too


def test_gallery_crops_do_not_overlap():
    ds = load("synthetic-copies", split="val", image_size=16, originals=10, distractors=30)
    boxes = ds.gallery_sources
    for i, (pi, bi) in enumerate(boxes):
        for pj, bj in boxes[i + 1:]:
            if pi == pj:
                assert bi[2] <= bj[0] or bj[2] <= bi[0] or bi[3] <= bj[1] or bj[3] <= bi[1]


def test_options_and_their_errors():
    ds = load("synthetic-copies", image_size=16, originals=3, queries_per_original=4, distractors=0)
    assert (len(ds), ds.gallery_size()) == (12, 3)
    assert [ds[i][1] for i in range(4)] == [ds[0][1]] * 4
    with pytest.raises(SuiteError, match="synthetic-copies split"):
        load("synthetic-copies", split="dev")
    with pytest.raises(SuiteError, match="originals must be an integer"):
        load("synthetic-copies", originals=0)
    with pytest.raises(SuiteError, match="image_size must be at least 16"):
        load("synthetic-copies", image_size=8)
    with pytest.raises(SuiteError, match="hold at most .* disjoint textured crops"):
        load("synthetic-copies", image_size=16, distractors=100_000)


def test_batches_views_and_fingerprints(copies):
    ds = copies
    batches = list(ds.batches(20))
    assert [len(b) for b in batches] == [20, 20, 8] and all(isinstance(b, Queries) for b in batches)
    assert batches[1].sample_id[0] == "q00020" and batches[1].matches[3] == ds[23][1]
    assert torch.equal(batches[2].images[0], ds[40][0])

    shard = ds.sample_range(10, 25)
    assert len(shard) == 15 and shard.sample_id(0) == "q00010" and shard[14][1] == ds[24][1]
    assert shard.gallery_ids() == ds.gallery_ids() and torch.equal(gallery(shard), gallery(ds))
    with pytest.raises(SuiteError, match="no fingerprint"):
        shard.fingerprint()
    with pytest.raises(SuiteError, match="outside"):
        ds.sample_range(40, 49)

    few = ds.limited(5)
    assert len(few) == 5 and few.gallery_size() == 96 and few[4][2] == "q00004"
    assert len({few.fingerprint(), ds.limited(6).fingerprint(), ds.fingerprint()}) == 3
    assert few.fingerprint() == ds.limited(5).fingerprint()
    assert len(ds.limited(1000)) == 48

    loaded = load("synthetic-copies", split="test", limit=7)
    assert len(loaded) == 7 and loaded.gallery_size() == 96 and loaded.fingerprint() == ds.limited(7).fingerprint()
    with pytest.raises(SuiteError, match="limit"):
        load("synthetic-copies", limit=0)


def test_registry_build_accepts_a_tuple_of_classes():
    registry = Registry("dataset", "lipsim_suite.none")
    registry.add("wrong", lambda: object())
    with pytest.raises(SuiteError, match="TwoAFCDataset or suite.datasets.retrieval.RetrievalDataset; got object"):
        registry.build("wrong", (TwoAFCDataset, RetrievalDataset))


# ---------------------------------------------------------------------------- copydays


def save(path, seed: int, size=(40, 30), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


@pytest.fixture
def copydays_root(tmp_path):
    root = tmp_path / "copydays"
    for n, stem in enumerate(("200000", "200100", "200200")):
        save(root / "original" / f"{stem}.jpg", n)
        for level in ("jpegqual/30", "jpegqual/5", "crops/50"):
            save(root / level / f"{stem}.jpg", 10 + n)
    for n, stem in enumerate(("200001", "200002", "200101", "200203")):
        save(root / "strong" / f"{stem}.jpg", 20 + n)
    save(tmp_path / "yfcc" / "b.png", 30)
    save(tmp_path / "yfcc" / "a.jpg", 31)
    (tmp_path / "yfcc" / "notes.txt").write_text("not an image")
    return root


def test_copydays_strong_maps_blocks_to_originals(copydays_root):
    ds = load("copydays", root=copydays_root, image_size=24)
    assert (ds.name, ds.split, ds.task) == ("copydays", "strong", "retrieval")
    assert ds.gallery_ids() == ["original/200000.jpg", "original/200100.jpg", "original/200200.jpg"]
    assert [ds.sample_id(i) for i in range(len(ds))] == [
        "strong/200001.jpg", "strong/200002.jpg", "strong/200101.jpg", "strong/200203.jpg"]
    assert [ds.matches(i) for i in range(len(ds))] == [(0,), (0,), (1,), (2,)]
    image, matches, _ = ds[2]
    assert image.shape == (3, 24, 24) and 0 <= image.min() and image.max() <= 1 and matches == (1,)
    assert gallery(ds).shape == (3, 3, 24, 24)


def test_copydays_variant_splits_all_and_distractors(copydays_root):
    jpeg = load("copydays", root=copydays_root, split="jpegqual/30", image_size=16)
    assert [jpeg[i][1:] for i in range(3)] == [((0,), "jpegqual/30/200000.jpg"), ((1,), "jpegqual/30/200100.jpg"),
                                               ((2,), "jpegqual/30/200200.jpg")]
    everything = load("copydays", root=copydays_root, split="all", image_size=16,
                      distractors=copydays_root.parent / "yfcc")
    folders = [everything.sample_id(i).rsplit("/", 1)[0] for i in range(len(everything))]
    assert folders == ["strong"] * 4 + ["jpegqual/5"] * 3 + ["jpegqual/30"] * 3 + ["crops/50"] * 3
    assert everything.gallery_ids()[3:] == ["distractors/a.jpg", "distractors/b.png"]
    assert everything.gallery_size() == 5 and gallery(everything).shape == (5, 3, 16, 16)
    assert all(max(everything.matches(i)) < 3 for i in range(len(everything)))  # distractors never match
    assert everything.fingerprint() != load("copydays", root=copydays_root, split="all").fingerprint()


def test_copydays_whitening_is_not_used(copydays_root):
    with pytest.warns(UserWarning, match="whitening is not used"):
        load("copydays", root=copydays_root, whitening=copydays_root)


def test_copydays_bad_input(copydays_root, tmp_path):
    with pytest.raises(SuiteError, match="copydays: root .*nowhere.* is not a folder"):
        load("copydays", root=tmp_path / "nowhere")
    with pytest.raises(SuiteError, match="copydays split must be strong, jpegqual/<q>, crops/<pct> or all"):
        load("copydays", root=copydays_root, split="jpegqual/high")
    with pytest.raises(SuiteError, match=r"crops/70.* is not a folder .*found: strong, jpegqual/5"):
        load("copydays", root=copydays_root, split="crops/70")
    with pytest.raises(SuiteError, match=r"copydays distractors: .*missing.* is not a folder"):
        load("copydays", root=copydays_root, distractors=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SuiteError, match=r"copydays distractors: .*empty.* holds no image file"):
        load("copydays", root=copydays_root, distractors=tmp_path / "empty")
    save(copydays_root / "strong" / "200301.jpg", 40)
    with pytest.raises(SuiteError, match=r"query .*200301\.jpg.* \(block 2003\) has no original in .*original"):
        load("copydays", root=copydays_root)
    (copydays_root / "strong" / "200301.jpg").unlink()
    save(copydays_root / "strong" / "holiday.jpg", 41)
    with pytest.raises(SuiteError, match=r"holiday\.jpg.* is not named by a Copydays number"):
        load("copydays", root=copydays_root)
    (copydays_root / "strong" / "holiday.jpg").unlink()
    (copydays_root / "strong" / "200002.jpg").write_bytes(b"not a jpeg")
    ds = load("copydays", root=copydays_root)
    with pytest.raises(SuiteError, match=r"cannot read image .*strong/200002\.jpg"):
        list(ds.batches(4))
    for path in (copydays_root / "original").iterdir():
        path.unlink()
    with pytest.raises(SuiteError, match=r"copydays originals: .*original.* holds no image file"):
        load("copydays", root=copydays_root)


# ---------------------------------------------------------------------------- image-pairs


@pytest.fixture
def pairs_root(tmp_path):
    root = tmp_path / "pairs"
    for n, name in enumerate(("a.png", "b.jpg", "c.png")):
        save(root / "gallery" / name, n)
    for n, name in enumerate(("q1.jpg", "q2.png", "q3.jpg")):
        save(root / "queries" / name, 10 + n)
    (root / "matches.csv").write_text("query,original\nq1.jpg,b.jpg\nq2.png,c.png\nq1.jpg,a.png\n")
    return root


def test_image_pairs(pairs_root):
    ds = load("image-pairs", root=pairs_root, image_size=20)
    assert (ds.name, ds.split, ds.image_size, ds.task) == ("image-pairs", "test", 20, "retrieval")
    assert ds.gallery_ids() == ["a.png", "b.jpg", "c.png"]
    assert [ds[i][1:] for i in range(3)] == [((0, 1), "q1.jpg"), ((2,), "q2.png"), ((), "q3.jpg")]
    batch = next(ds.batches(8))
    assert batch.images.shape == (3, 3, 20, 20) and batch.matches[2] == ()
    assert [b.shape[0] for b in ds.gallery_batches(2)] == [2, 1]
    assert load("image-pairs", root=pairs_root, limit=1).gallery_size() == 3


def test_image_pairs_bad_input(pairs_root, tmp_path):
    csv_path = pairs_root / "matches.csv"
    with pytest.raises(SuiteError, match="image-pairs split must be one of test"):
        load("image-pairs", root=pairs_root, split="train")
    csv_path.write_text("query,original\nq9.jpg,a.png\n")
    with pytest.raises(SuiteError, match=r"matches\.csv.* row 2: query 'q9\.jpg' not found in .*queries"):
        load("image-pairs", root=pairs_root)
    csv_path.write_text("query,original\nq1.jpg,a.png\nq2.png,z.png\n")
    with pytest.raises(SuiteError, match=r"matches\.csv.* row 3: original 'z\.png' of query 'q2\.png' not found in "
                                         r".*gallery"):
        load("image-pairs", root=pairs_root)
    csv_path.write_text("image,source\nq1.jpg,a.png\n")
    with pytest.raises(SuiteError, match=r"matches\.csv.* must start with the header query,original; got image,source"):
        load("image-pairs", root=pairs_root)
    csv_path.unlink()
    with pytest.raises(SuiteError, match=r"matches\.csv.* not found"):
        load("image-pairs", root=pairs_root)
    csv_path.write_text("query,original\n")
    (pairs_root / "gallery" / "b.jpg").write_bytes(b"\x89PNG garbage")
    ds = load("image-pairs", root=pairs_root)
    with pytest.raises(SuiteError, match=r"cannot read image .*gallery/b\.jpg"):
        list(ds.gallery_batches(4))
    for path in (pairs_root / "gallery").iterdir():
        path.unlink()
    with pytest.raises(SuiteError, match=r"image-pairs gallery: .*gallery.* holds no image file"):
        load("image-pairs", root=pairs_root)
    (pairs_root / "gallery").rmdir()
    with pytest.raises(SuiteError, match=r"image-pairs gallery: .*gallery.* is not a folder"):
        load("image-pairs", root=pairs_root)
    with pytest.raises(SuiteError, match="image-pairs: the option root"):
        load("image-pairs")
