"""dino: parity with timm's ``vit_base_patch16_224.dino`` on random weights, lookup, gradients.

One full-size ViT-B/16 built once for the module (random weights saved by the test).
"""

import pytest
import torch
import torch.nn.functional as F

import metrics
import metrics.dino  # noqa: F401  (registers "dino")
from metrics.clip import IMAGENET_MEAN, IMAGENET_STD
from suite.errors import MissingWeightsError, SuiteError

timm = pytest.importorskip("timm")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def by_hand(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def dino(tmp_path_factory):
    """timm's DINO ViT-B/16 with random weights, saved as timm's ``model.safetensors``, and our metric on it."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224.dino", pretrained=False).eval()
    folder = tmp_path_factory.mktemp("dino")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    return model, folder, metrics.load("dino", weights=folder / "model.safetensors")


def test_cls_embedding_equals_timm_before_and_after_the_final_norm(dino):
    model, folder, metric = dino
    x = torch.rand(2, 3, 224, 224)
    last = {}
    hook = model.blocks[-1].register_forward_hook(lambda mod, inp, out: last.setdefault("z", out))
    try:
        with torch.no_grad():
            ref = model(by_hand(x))  # num_classes = 0: the CLS token after the final LayerNorm
            ours = metric.embed(x)
    finally:
        hook.remove()
    assert ours.shape == (2, 768) and metric.final_norm
    assert rel_err(ours, ref) < 1e-5
    expected = 1 - F.cosine_similarity(ref[:1].double(), ref[1:].double(), dim=1)
    with torch.no_grad():
        assert rel_err(metric.distance(x[:1], x[1:]), expected) < 1e-5

    # DINO's hub checkpoint (same names, torch.save) and the pre-norm CLS (DreamSim's feature)
    torch.save(model.state_dict(), folder / "dino_vitbase16_pretrain.pth")
    pre = metrics.load("dino", weights=folder / "dino_vitbase16_pretrain.pth", final_norm=False)
    with torch.no_grad():
        assert rel_err(pre.embed(x), last["z"][:, 0]) < 1e-5
    assert pre.metric_id() != metric.metric_id()


def test_resize_is_inside_and_gradients_flow(dino):
    _, _, metric = dino
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    y = torch.rand(1, 3, 64, 64)
    d = metric.distance(x, y)
    d.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.no_grad():
        big = F.interpolate(x.detach(), size=(224, 224), mode="bicubic", antialias=True)
        torch.testing.assert_close(metric.embed(x.detach()), metric.embed(big))


def test_missing_checkpoint_names_the_file_and_every_place(tmp_path, monkeypatch):
    for var in ("LIPSIM_SUITE_WEIGHTS", "TORCH_HOME", "HF_HUB_CACHE"):
        (tmp_path / var.lower()).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingWeightsError) as info:
        metrics.load("dino")
    err = info.value
    assert err.tag == "dino-vitb16" and err.file == "model.safetensors"
    places = "\n".join(err.places)
    assert str(tmp_path / "lipsim_suite_weights" / "dino-vitb16" / "model.safetensors") in places
    assert "models--timm--vit_base_patch16_224.dino" in places
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / "dino_vitbase16_pretrain.pth") in places
    assert "models/checkpoints/dino_vitbase16_pretrain.pth" in places
    assert "model.safetensors" in str(err)


def test_strict_loading_and_random_weights_only_when_asked(dino, tmp_path):
    model, _, _ = dino
    partial = {k: v for k, v in model.state_dict().items() if not k.startswith("norm.")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(SuiteError, match="does not fit"):
        metrics.load("dino", weights=tmp_path / "partial.pth")
    with pytest.raises(SuiteError, match="contradict"):
        metrics.load("dino", weights=tmp_path / "partial.pth", pretrained=False)
