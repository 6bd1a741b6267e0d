"""clip / open_clip / r-clip: parity with open_clip's ``encode_image`` on random weights, lookup, gradients.

No network and no published weights: every checkpoint is a random open_clip model saved by
the test. One full-size (ViT-B/32 at 224) parity check; the rest runs on ViT-S-32.
"""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

import metrics
import metrics.clip as C
from metrics import weights as W
from suite.errors import MissingWeightsError, SuiteError

open_clip = pytest.importorskip("open_clip")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a − b| / max|b|``: the relative error of ``a`` as an approximation of ``b``."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def by_hand(x: torch.Tensor, mean=C.OPENAI_MEAN, std=C.OPENAI_STD) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def random_clip(arch: str, seed: int, quick_gelu: bool = False):
    torch.manual_seed(seed)
    with C.quiet_logging():
        return open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu).eval()


@pytest.fixture
def no_caches(tmp_path, monkeypatch):
    """Every weights cache empty: suite folder, torch hub, Hugging Face, ``~/.cache/clip``, ``./models``."""
    for var in ("LIPSIM_SUITE_WEIGHTS", "TORCH_HOME", "HF_HUB_CACHE"):
        (tmp_path / var.lower()).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random ViT-S-32 open_clip model and its checkpoint (full model, ``torch.save``)."""
    model = random_clip("ViT-S-32", seed=1)
    folder = tmp_path_factory.mktemp("tiny")
    torch.save(model.state_dict(), folder / "full.pt")
    return model, folder


def test_clip_embedding_equals_open_clip_encode_image_at_full_size(tmp_path):
    """OpenAI-style ViT-B/32 (QuickGELU): our [0,1] → mean/std → tower equals encode_image on normalised input."""
    from safetensors.torch import save_file

    model = random_clip("ViT-B-32", seed=2, quick_gelu=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "open_clip_model.safetensors")
    metric = metrics.load("clip", weights=tmp_path / "open_clip_model.safetensors")
    assert metric.input_size == 224 and metric.random_weights is False and metric.quick_gelu

    x = torch.rand(3, 3, 224, 224)
    with torch.no_grad():
        ours, ref = metric.embed(x), model.encode_image(by_hand(x))
        assert ours.shape == (3, 512)
        assert rel_err(ours, ref) < 1e-5
        expected = 1 - F.cosine_similarity(ref[:1].double(), ref[1:].double(), dim=1)
        assert rel_err(metric.distance(x[:1].expand(2, -1, -1, -1), x[1:]), expected) < 1e-5
        # the same tensors through plain GELU give another function: QuickGELU is not optional
        gelu = metrics.load("open_clip", arch="ViT-B-32", weights=tmp_path / "open_clip_model.safetensors")
        assert rel_err(gelu.embed(x), ref) > 1e-3


def test_open_clip_resizes_inside_and_reads_every_checkpoint_format(tiny, tmp_path):
    """Full model (.pt), image-tower state dict (.safetensors) and TorchScript archive give the same metric."""
    from safetensors.torch import save_file

    model, folder = tiny
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        ref = model.encode_image(by_hand(F.interpolate(x, size=(224, 224), mode="bicubic", antialias=True)))

    save_file({k: v.contiguous() for k, v in model.visual.state_dict().items()}, tmp_path / "visual.safetensors")
    traced_model = copy.deepcopy(model.visual).half()

    class Wrap(torch.nn.Module):  # OpenAI's archives hold the whole CLIP, the tower under ``visual``
        def __init__(self, visual):
            super().__init__()
            self.visual = visual

        def forward(self, z):
            return self.visual(z)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(Wrap(traced_model), torch.rand(1, 3, 224, 224).half(), check_trace=False)
        torch.jit.save(traced, str(tmp_path / "archive.pt"))

    for path, tol in ((folder / "full.pt", 1e-5), (tmp_path / "visual.safetensors", 1e-5),
                      (tmp_path / "archive.pt", 2e-3)):  # the archive stores float16, like OpenAI's
        metric = metrics.load("open_clip", arch="ViT-S-32", weights=path)
        with torch.no_grad():
            assert rel_err(metric.embed(x), ref) < tol, path.name


def test_gradients_flow_through_embed_and_pair_distances_agree(tiny):
    model, folder = tiny
    metric = metrics.load("open_clip", arch="ViT-S-32", weights=folder / "full.pt")
    assert not any(p.requires_grad for p in metric.parameters())  # fixed weights, input gradients only
    ref, x0, x1 = (torch.rand(2, 3, 32, 32) for _ in range(3))
    ref.requires_grad_(True)
    d0, d1 = metric.pair_distances(ref, x0, x1)
    (d0 - d1).sum().backward()
    assert torch.isfinite(ref.grad).all() and ref.grad.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(d0, metric.distance(ref, x0))
        torch.testing.assert_close(d1, metric.distance(ref, x1))


def test_missing_default_weights_name_the_file_and_every_place(no_caches):
    with pytest.raises(MissingWeightsError) as info:
        metrics.load("clip")
    err = info.value
    assert err.tag == "clip-vit-b-32" and err.file == "ViT-B-32.pt"
    places = "\n".join(err.places)
    assert str(no_caches / "lipsim_suite_weights" / "clip-vit-b-32" / "ViT-B-32.pt") in places
    assert str(no_caches / "home" / ".cache" / "clip" / "ViT-B-32.pt") in places
    assert "models--timm--vit_base_patch32_clip_224.openai" in places  # open_clip's mirror
    assert "ViT-B-32.pt" in str(err) and "lipsim weights fetch clip-vit-b-32" in str(err)

    with pytest.raises(MissingWeightsError) as info:
        metrics.load("r-clip", variant="vit-b-16-tecoa")
    places = "\n".join(info.value.places)
    assert info.value.file == "open_clip_model.safetensors"
    assert "models--chs20--TeCoA4-ViT-B-16-laion2B-s34B-b88K" in places and "vit-b-16-tecoa-eps4.pt" in places

    with pytest.raises(SuiteError, match="nothing-here.pt"):  # a path the user names: no tag, no fetch
        metrics.load("open_clip", arch="ViT-S-32", weights=no_caches / "nothing-here.pt")


def test_a_weights_tag_is_found_in_the_hugging_face_cache_and_through_its_alternatives(tiny, no_caches, monkeypatch):
    """Tag lookup on a tiny stand-in: the HF snapshot's ``.bin`` twin, then a published alternative file."""
    model, folder = tiny
    tag = W.WeightsTag(
        tag="test-open-clip-vit-s-32", metric="open_clip",
        files=(W.WeightFile("open_clip_model.safetensors", "https://example.invalid/x", hf_repo="test-org/tiny"),),
        paper="test", extra={"arch": "ViT-S-32", "mean": C.OPENAI_MEAN, "std": C.OPENAI_STD, "image_size": 256,
                             "crop": 224, "alternatives": {"open_clip_model.safetensors": (
                                 W.WeightFile("tiny-eps4.pt", "https://example.invalid/y"),)}},
    )
    monkeypatch.setitem(W.TAGS, tag.tag, tag)
    with pytest.raises(MissingWeightsError, match="tiny-eps4.pt"):
        metrics.load("open_clip", arch="ViT-S-32", tag=tag.tag)

    snapshot = no_caches / "hf_hub_cache" / "models--test-org--tiny" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").write_bytes((folder / "full.pt").read_bytes())
    metric = metrics.load("open_clip", arch="ViT-S-32", tag=tag.tag)
    assert metric.weights_path == str(snapshot / "open_clip_pytorch_model.bin")
    assert metric.input_size == 224  # the tag's preprocessing: resize to 256, centre crop 224

    (snapshot / "open_clip_pytorch_model.bin").unlink()
    (no_caches / "lipsim_suite_weights" / tag.tag).mkdir()
    torch.save(model.visual.state_dict(), no_caches / "lipsim_suite_weights" / tag.tag / "tiny-eps4.pt")
    again = metrics.load("open_clip", arch="ViT-S-32", tag=tag.tag)
    x = torch.rand(1, 3, 80, 80)
    with torch.no_grad():
        crop = F.interpolate(x, size=(256, 256), mode="bicubic", antialias=True)[..., 16:240, 16:240]
        assert rel_err(again.embed(x), model.encode_image(by_hand(crop))) < 1e-5
        assert rel_err(again.embed(x), metric.embed(x)) < 1e-6


def test_robust_clip_variants_are_published_tags_of_the_open_clip_family():
    import metrics.clip  # noqa: F401  (registers r-clip)

    assert set(C.R_CLIP_TAGS) >= {"vit-b-16-fare", "vit-b-16-tecoa", "convnext_base_w-fare", "convnext_base_w-tecoa"}
    for variant, name in C.R_CLIP_TAGS.items():
        tag = W.get_tag(name)
        assert tag.metric == "r-clip" and tag.files[0].hf_repo.startswith("chs20/")
        assert tag.extra["arch"] in open_clip.list_models()
        if variant.startswith("convnext"):
            assert (tag.extra["image_size"], tag.extra["crop"]) == (256, 224)
        if variant.startswith("vit-l-14"):
            assert tag.extra["quick_gelu"] is True  # fine-tuned from OpenAI CLIP
    with pytest.raises(SuiteError, match="unknown variant"):
        metrics.load("r-clip", variant="vit-b-16-madry")


def test_random_weights_only_when_asked():
    a = metrics.load("open_clip", arch="ViT-S-32", pretrained=False, seed=3)
    b = metrics.load("open_clip", arch="ViT-S-32", pretrained=False, seed=3)
    assert a.random_weights and a.weights_id() == b.weights_id()
    assert a.metric_id() != metrics.load("open_clip", arch="ViT-S-32", pretrained=False, seed=4).metric_id()
    with pytest.raises(SuiteError, match="contradict"):
        metrics.load("open_clip", arch="ViT-S-32", pretrained=False, weights="x.pt")
    with pytest.raises(SuiteError, match="no published weights are registered"):
        metrics.load("open_clip", arch="ViT-S-32")
    with pytest.raises(SuiteError, match="not 'ViT-S-32'"):
        metrics.load("open_clip", arch="ViT-S-32", tag="open-clip-vit-b-32-laion2b-s34b-b79k")


def test_a_checkpoint_of_another_architecture_is_a_clear_error(tiny):
    _, folder = tiny
    with pytest.raises(SuiteError, match="does not fit the architecture"):
        metrics.load("open_clip", arch="ViT-S-16", weights=folder / "full.pt")


def test_image_transform_resizes_crops_and_normalises():
    t = C.ImageTransform(8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), crop=6)
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(t(x), (x[..., 1:7, 1:7] - 0.5) / 0.25)
    assert t.output_size == 6 and C.ImageTransform(8, (0,) * 3, (1,) * 3).output_size == 8
