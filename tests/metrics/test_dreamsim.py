"""dreamsim: parity with the ``dreamsim`` package (0.2.1) built offline on the same random tensors.

The test writes a checkpoint folder in DreamSim's released layout (random ViT weights,
DINO's hub checkpoint under ``checkpoints/``, an ``ensemble_lora`` adapter with nonzero
``B``), builds DreamSim's own model from it with its hub and download calls patched out,
and loads the same folder with ours. The three-ViT-B build happens once per module.
"""

import json
from pathlib import Path

import pytest
import torch

import metrics
import metrics.dreamsim as D
from suite.errors import MissingWeightsError, SuiteError

pytest.importorskip("dreamsim")
pytest.importorskip("peft")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def vit_shapes(patch: int, clip: bool) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of a ViT-B in DINO's layout (DreamSim's files); CLIP towers add ``pos_drop``, ``proj``."""
    shapes = {"cls_token": (1, 1, 768), "pos_embed": (1, (224 // patch) ** 2 + 1, 768),
              "patch_embed.proj.weight": (768, 3, patch, patch), "patch_embed.proj.bias": (768,)}
    for i in range(12):
        for name, shape in {"norm1.weight": (768,), "norm1.bias": (768,), "attn.qkv.weight": (2304, 768),
                            "attn.qkv.bias": (2304,), "attn.proj.weight": (768, 768), "attn.proj.bias": (768,),
                            "norm2.weight": (768,), "norm2.bias": (768,), "mlp.fc1.weight": (3072, 768),
                            "mlp.fc1.bias": (3072,), "mlp.fc2.weight": (768, 3072), "mlp.fc2.bias": (768,)}.items():
            shapes[f"blocks.{i}.{name}"] = shape
    shapes.update({"norm.weight": (768,), "norm.bias": (768,)})
    if clip:
        shapes.update({"pos_drop.weight": (768,), "pos_drop.bias": (768,), "proj": (768, 512)})
    return shapes


def random_tensors(shapes: dict, seed: int) -> dict[str, torch.Tensor]:
    """LayerNorm scales ≈ 1, everything else ≈ N(0, 0.02²): a tame random ViT (nonzero patch bias included)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        t = torch.randn(shape, generator=g)
        is_scale = key.endswith("weight") and len(shape) == 1
        out[key] = 1 + 0.1 * t if is_scale else 0.02 * t
    return out


def write_lora(folder: Path, extractors: int, seed: int, r: int = 16, alpha: float = 8) -> None:
    """A peft LoRA folder as DreamSim saves it: ``adapter_config.json`` and ``adapter_model.bin`` (B ≠ 0)."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": alpha, "lora_dropout": 0.3, "bias": "none",
        "target_modules": ["qkv"], "task_type": None, "base_model_name_or_path": None, "inference_mode": True,
        "fan_in_fan_out": False, "init_lora_weights": True, "modules_to_save": None}))
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for i in range(extractors):
        for j in range(12):
            prefix = f"base_model.model.extractor_list.{i}.model.blocks.{j}.attn.qkv."
            tensors[prefix + "lora_A.weight"] = 0.05 * torch.randn(r, 768, generator=g)
            tensors[prefix + "lora_B.weight"] = 0.05 * torch.randn(2304, r, generator=g)
    torch.save(tensors, folder / "adapter_model.bin")


def write_ensemble(folder: Path) -> None:
    """DreamSim's ``./models`` after a first run: release files + DINO's hub checkpoint in ``checkpoints/``."""
    (folder / "checkpoints").mkdir(parents=True)
    torch.save(random_tensors(vit_shapes(16, clip=False), 1), folder / "checkpoints" / "dino_vitbase16_pretrain.pth")
    head = {"mlp.0.weight": (2048, 768), "mlp.0.bias": (2048,), "mlp.2.weight": (2048, 2048), "mlp.2.bias": (2048,),
            "mlp.4.weight": (256, 2048), "mlp.4.bias": (256,), "last_layer.weight": (2048, 256)}
    torch.save({"student": {f"module.head.{k}": torch.zeros(s) for k, s in head.items()}},
               folder / "dino_vitb16_pretrain.pth")  # DINO's projection head: DreamSim reads it, the CLS ignores it
    for seed, name in ((2, "clip_vitb16_pretrain.pth.tar"), (3, "open_clip_vitb16_pretrain.pth.tar")):
        torch.save({"state_dict": random_tensors(vit_shapes(16, clip=True), seed)}, folder / name)
    write_lora(folder / "ensemble_lora", extractors=3, seed=4)


def dreamsim_offline(folder: Path, dreamsim_type: str = "ensemble"):
    """The ``dreamsim`` package's model built from ``folder``: torch hub and downloads patched out."""
    from dreamsim import dreamsim
    from dreamsim.feature_extraction.vision_transformer import vit_base

    def hub_load(repo, name, *args, **kwargs):
        assert (repo, name) == ("facebookresearch/dino:main", "dino_vitb16")
        vit = vit_base(patch_size=16)
        vit.load_state_dict(torch.load(folder / "checkpoints" / "dino_vitbase16_pretrain.pth", weights_only=True))
        return vit

    def no_download(*args, **kwargs):
        raise AssertionError("the dreamsim package tried to download")

    import open_clip.pretrained

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.hub, "load", hub_load)
        mp.setattr(torch.hub, "set_dir", lambda path: None)  # DreamSim points torch hub at its folder
        mp.setattr(torch.hub, "download_url_to_file", no_download)  # its checkpoint download
        mp.setattr(open_clip.pretrained, "download_pretrained_from_url", no_download)
        mp.setattr(open_clip.pretrained, "download_pretrained_from_hf", no_download)
        mp.setenv("HF_HUB_OFFLINE", "1")
        model, _ = dreamsim(pretrained=True, device="cpu", cache_dir=str(folder), dreamsim_type=dreamsim_type)
    return model.eval()


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dreamsim") / "models"
    write_ensemble(folder)
    return folder, dreamsim_offline(folder), metrics.load("dreamsim", weights=folder)


def test_embeddings_and_distances_equal_the_dreamsim_package(ensemble):
    folder, theirs, ours = ensemble
    g = torch.Generator().manual_seed(5)
    noise = torch.rand(1, 3, 224, 224, generator=g)
    ramp = torch.linspace(0, 1, 224).view(1, 1, 1, 224).expand(1, 3, 224, 224)
    x = torch.cat([noise, ramp])
    with torch.no_grad():
        e_theirs, e_ours = theirs.embed(x), ours.embed(x)
        assert e_ours.shape == (2, 1792)
        assert rel_err(e_ours, e_theirs) < 1e-5
        # DreamSim's forward is 1 − cos of these embeddings; ours is compare(embed, embed) (float64 cosine)
        d_theirs = 1 - torch.nn.functional.cosine_similarity(e_theirs[:1], e_theirs[1:], dim=-1)
        d_ours = ours.compare(e_ours[:1], e_ours[1:])
        assert d_ours.shape == (1,) and rel_err(d_ours, d_theirs) < 1e-5

    # the adapter matters: peft loaded our nonzero B into theirs, and ours holds W + (α/r)·B·A
    lora_b = [p for n, p in theirs.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 36 and all(p.abs().max() > 0 for p in lora_b)
    raw = torch.load(folder / "open_clip_vitb16_pretrain.pth.tar", weights_only=True)["state_dict"]
    adapter = torch.load(folder / "ensemble_lora" / "adapter_model.bin", weights_only=True)
    prefix = "base_model.model.extractor_list.2.model.blocks.5.attn.qkv."
    delta = 0.5 * adapter[prefix + "lora_B.weight"] @ adapter[prefix + "lora_A.weight"]  # α/r = 8/16
    merged = raw["blocks.5.attn.qkv.weight"] + delta
    ours_w = ours.backbones[2].net.transformer.resblocks[5].attn.in_proj_weight
    torch.testing.assert_close(ours_w, merged)
    assert delta.abs().max() > 0.1 * raw["blocks.5.attn.qkv.weight"].abs().max()


def test_gradients_flow_through_the_resize_and_all_three_backbones(ensemble):
    _, _, ours = ensemble
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    y = torch.rand(1, 3, 64, 64)
    ours.distance(x, y).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in ours.parameters())


def test_single_branch_clip_vitb32_equals_the_dreamsim_package(tmp_path):
    """DreamSim's single OpenAI CLIP ViT-B/32 (QuickGELU, ``clip_vitb32_single_lora``): cheap at 50 tokens."""
    folder = tmp_path / "models"
    folder.mkdir()
    torch.save({"state_dict": random_tensors(vit_shapes(32, clip=True), 6)}, folder / "clip_vitb32_pretrain.pth.tar")
    write_lora(folder / "clip_vitb32_single_lora", extractors=1, seed=7, alpha=32)
    theirs = dreamsim_offline(folder, "clip_vitb32")
    ours = metrics.load("dreamsim", weights=folder, branch="clip")
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        e = ours.embed(x)
        assert e.shape == (2, 512) and rel_err(e, theirs.embed(x)) < 1e-5


def test_missing_checkpoint_names_the_file_and_every_place(tmp_path, monkeypatch):
    for var in ("LIPSIM_SUITE_WEIGHTS", "TORCH_HOME", "HF_HUB_CACHE"):
        (tmp_path / var.lower()).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.chdir(tmp_path)  # DreamSim's ./models is empty
    with pytest.raises(MissingWeightsError) as info:
        metrics.load("dreamsim")
    err = info.value
    assert err.tag == "dreamsim-ensemble" and err.file == "dino_vitbase16_pretrain.pth"
    places = "\n".join(err.places)
    assert str(tmp_path / "lipsim_suite_weights" / "dreamsim-ensemble" / "dino_vitbase16_pretrain.pth") in places
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / "dino_vitbase16_pretrain.pth") in places
    assert "models/checkpoints/dino_vitbase16_pretrain.pth" in places
    assert str(tmp_path / "lipsim_suite_weights" / "dino-vitb16" / "model.safetensors") in places  # the dino metric's
    assert "dino_vitbase16_pretrain.pth" in str(err) and "lipsim weights fetch dreamsim-ensemble" in str(err)

    # a folder with only DINO's backbone: the next file is named, looked for in that folder only
    folder = tmp_path / "mine"
    (folder / "checkpoints").mkdir(parents=True)
    torch.save({}, folder / "checkpoints" / "dino_vitbase16_pretrain.pth")
    with pytest.raises(MissingWeightsError) as info:
        metrics.load("dreamsim", weights=folder)
    assert info.value.file == "clip_vitb16_pretrain.pth.tar"
    assert info.value.places == [str(folder / "clip_vitb16_pretrain.pth.tar")]


def test_lora_merge_formula_and_refusals():
    a, b = torch.randn(2, 5), torch.randn(6, 2)
    key = "base_model.model.extractor_list.1.model.blocks.3.attn.qkv.lora_{}.weight"
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 8, "target_modules": ["qkv"], "bias": "none"}
    deltas = D.lora_deltas(config, {key.format("A"): a, key.format("B"): b})
    torch.testing.assert_close(deltas[(1, 3)], 4 * b @ a)  # α/r = 4
    rs = D.lora_deltas({**config, "use_rslora": True}, {key.format("A"): a, key.format("B"): b})
    torch.testing.assert_close(rs[(1, 3)], 8 / 2 ** 0.5 * b @ a)
    with pytest.raises(SuiteError, match="only plain LoRA"):
        D.lora_deltas({**config, "bias": "all"}, {key.format("A"): a, key.format("B"): b})
    with pytest.raises(SuiteError, match="unexpected tensor"):
        D.lora_deltas(config, {"base_model.model.mlp.fc1.lora_A.weight": a})
    with pytest.raises(SuiteError, match="unknown branch"):
        metrics.load("dreamsim", branch="synclr")
