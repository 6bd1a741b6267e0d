"""Perceptual-hash baselines ``phash`` and ``pdq`` against the libraries that define them."""

import io

import imagehash
import numpy as np
import pdqhash
import pytest
import torch
from PIL import Image
from skimage import data

import attacks
import metrics
from suite.errors import SuiteError
from suite.types import Triplets

SIZE = 128
PHOTOS = ("astronaut", "chelsea", "coffee")


def square(name: str, size: int = SIZE) -> np.ndarray:
    """A centre square of a scikit-image photograph, resized to ``size`` (``H×W×3`` uint8)."""
    a = getattr(data, name)()
    h, w = a.shape[:2]
    m = min(h, w)
    a = a[(h - m) // 2:(h - m) // 2 + m, (w - m) // 2:(w - m) // 2 + m]
    return np.asarray(Image.fromarray(a).resize((size, size), Image.BICUBIC))


def jpeg(a: np.ndarray, quality: int = 75) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def resized(a: np.ndarray, by: int = 12) -> np.ndarray:
    """Shrunk by ``by`` pixels and grown back: a slightly resampled copy."""
    s = a.shape[0]
    small = Image.fromarray(a).resize((s - by, s - by), Image.BILINEAR)
    return np.asarray(small.resize((s, s), Image.BILINEAR))


def tensor(images, dtype=torch.float64) -> torch.Tensor:
    """uint8 ``H×W×3`` images → ``(B, 3, H, W)`` in ``[0, 1]`` (exact: ``round(x·255)`` gives them back)."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(dtype) / 255


@pytest.fixture(scope="module")
def photos():
    return {name: square(name) for name in PHOTOS}


def library_distance(name: str, a: np.ndarray, b: np.ndarray) -> float:
    if name == "phash":
        return (imagehash.phash(Image.fromarray(a)) - imagehash.phash(Image.fromarray(b))) / 64
    ha, hb = pdqhash.compute(a)[0], pdqhash.compute(b)[0]
    return float((ha != hb).sum()) / 256


@pytest.mark.parametrize("name", ["phash", "pdq"])
def test_declarations_and_load(name):
    metric = metrics.load(name)
    assert metric.differentiable is False and metric.lower_is_better is True and metric.certifiable is False
    assert metric.bits == (64 if name == "phash" else 256)
    # no weights: a stable id from the library versions and the options
    assert metric.metric_id() == metrics.load(name).metric_id()
    assert len(metric.metric_id()) == 16


def test_phash_options_change_the_id_and_the_hash_length(photos):
    a, b = metrics.load("phash"), metrics.load("phash", hash_size=16)
    assert a.metric_id() != b.metric_id()
    assert metrics.load("phash", highfreq_factor=2).metric_id() != a.metric_id()
    x = tensor([photos["astronaut"]])
    assert b.represent(x).shape == (1, 256)
    expected = imagehash.phash(Image.fromarray(photos["astronaut"]), hash_size=16).hash.reshape(-1)
    assert b.represent(x)[0].numpy().tolist() == expected.tolist()


@pytest.mark.parametrize("option", [{"hash_size": 1}, {"hash_size": 8.0}, {"highfreq_factor": 0}])
def test_bad_options_are_one_line_errors(option):
    with pytest.raises(SuiteError) as err:
        metrics.load("phash", **option)
    assert "\n" not in str(err.value) and "phash:" in str(err.value)


@pytest.mark.parametrize("name", ["phash", "pdq"])
def test_distances_match_the_library_and_separate_copies_from_other_photographs(name, photos):
    metric = metrics.load(name)
    originals = [photos[p] for p in PHOTOS]
    others = originals[1:] + originals[:1]
    for edit, copies in (("jpeg", [jpeg(a) for a in originals]), ("resize", [resized(a) for a in originals])):
        d = metric.distance(tensor(originals), tensor(copies))
        assert d.tolist() == pytest.approx([library_distance(name, a, b) for a, b in zip(originals, copies)], abs=0)
        assert (d < 0.2).all(), (edit, d)
    d = metric.distance(tensor(originals), tensor(others))
    assert d.tolist() == pytest.approx([library_distance(name, a, b) for a, b in zip(originals, others)], abs=0)
    assert (d > 0.3).all(), d
    same = metric.distance(tensor(originals), tensor(originals))
    assert same.tolist() == [0.0] * len(PHOTOS)


@pytest.mark.parametrize("name", ["phash", "pdq"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_dtype_device_and_represent(name, dtype, photos):
    metric = metrics.load(name)
    x = tensor([photos[p] for p in PHOTOS], dtype)
    y = tensor([jpeg(photos[p]) for p in PHOTOS], dtype)
    d = metric.distance(x, y)
    assert d.shape == (3,) and d.dtype == dtype and d.device == x.device and not d.requires_grad
    r = metric.represent(y)
    assert r.dtype == torch.bool and r.shape == (3, metric.bits)
    assert torch.equal(metric.distance_to(x, r), d)
    # the library's bits, in the library's order
    if name == "pdq":
        assert r[0].numpy().astype(int).tolist() == pdqhash.compute(jpeg(photos[PHOTOS[0]]))[0].tolist()
    # an image that asks for a gradient is hashed all the same (no gradient flows)
    assert torch.equal(metric.distance(x.clone().requires_grad_(True), y), d)
    with pytest.raises(SuiteError, match=rf"expected hashes \(B, {metric.bits}\)"):
        metric.distance_to(x, r[:, :10])


@pytest.mark.parametrize("name", ["phash", "pdq"])
def test_pair_distances_go_through_the_base_class(name, photos):
    metric = metrics.load(name)
    ref = tensor([photos[p] for p in PHOTOS])
    x0 = tensor([jpeg(photos[p]) for p in PHOTOS])
    x1 = ref.roll(1, 0)
    d0, d1 = metric.pair_distances(ref, x0, x1)
    assert torch.equal(d0, metric.distance(ref, x0)) and torch.equal(d1, metric.distance(ref, x1))
    assert (d0 < d1).all()


def _triplets(photos, n=2, size=32):
    imgs = [tensor([square(p, size) for p in PHOTOS[:n]], torch.float32)]
    imgs.append(tensor([jpeg(square(p, size)) for p in PHOTOS[:n]], torch.float32))
    imgs.append(imgs[0].roll(1, 0))
    return Triplets(*imgs, torch.tensor([0.1, 0.2])[:n], [f"s{i}" for i in range(n)])


@pytest.mark.parametrize("name", ["phash", "pdq"])
def test_gradient_attacks_refuse_and_name_square(name, photos):
    metric = metrics.load(name)
    attack = attacks.load("pgd", norm="l2", eps=0.5, threat="ref", seed=0)
    with pytest.raises(SuiteError, match=r"(?i)no gradient.*square") as err:
        attack.perturb(metric, _triplets(photos))
    assert "\n" not in str(err.value)


def test_square_attacks_a_hash(photos, one_thread):
    """The gradient-free path runs end to end and never scores above the clean decision."""
    from suite.scoring import twoafc_score

    metric = metrics.load("phash")
    batch = _triplets(photos)
    adv = attacks.load("autoattack", norm="linf", eps=8 / 255, attacks=["square"], n_queries=10,
                       seed=0).perturb(metric, batch)
    clean = twoafc_score(*metric.pair_distances(batch.ref, batch.x0, batch.x1), batch.judge)
    attacked = twoafc_score(*metric.pair_distances(adv.ref, adv.x0, adv.x1), adv.judge)
    assert (attacked <= clean).all()
    assert (adv.ref - batch.ref).abs().max() <= 8 / 255 + 1e-5
