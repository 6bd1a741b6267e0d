"""LipSim weights: our format (safetensors + JSON config) and the released reference ``.pth``.

Our checkpoint is a directory with ``model.safetensors`` (the state dict of
:class:`~metrics.lipsim.model.LipSimNet`) and ``config.json`` (the fields of
:class:`~metrics.lipsim.presets.LipSimConfig`).

A reference checkpoint is the ``.pth`` the LipSim code saves: a dict whose
``model_state_dict`` holds ``module.model.base.1.<i>.{kernel,bias,q}`` (convolutional
SLL layers, ``i`` from 0) and ``module.model.base.2.<j>.{weight,bias,q}`` (dense SLL
layers, ``j`` from 1: ``base.2.0`` is the flatten). The same tensors appear again
under ``module.model.convs.*`` and ``module.model.linear.*`` (the reference registers
those modules twice) and optimisers may add ``alpha`` entries; both are skipped.
It is read with ``torch.load(weights_only=True)``: tensors and plain containers only.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from metrics.lipsim.model import LipSimNet
from metrics.lipsim.presets import PRESETS, LipSimConfig
from suite.errors import SuiteError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
REFERENCE_SUFFIXES = (".pth", ".pt", ".ckpt")

#: the released model's pooling count and embedding size (DreamSim ensemble), which the file does not record
REFERENCE_N_POOLS = 2
REFERENCE_EMBED_DIM = 1792

_CONV_KEY = re.compile(r"^(?:module\.)?(?:model\.)?base\.1\.(\d+)\.(kernel|bias|q)$")
_DENSE_KEY = re.compile(r"^(?:module\.)?(?:model\.)?base\.2\.(\d+)\.(weight|bias|q)$")
_DUPLICATE_KEY = re.compile(r"^(?:module\.)?(?:model\.)?(convs|linear)\.\d+\.\w+$")


def save(net: LipSimNet, directory: str | Path) -> Path:
    """Write ``model.safetensors`` and ``config.json`` of ``net`` into ``directory``; return the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "lipsim-suite", "preset": net.config.name})
    (directory / CONFIG_FILE).write_text(json.dumps(net.config.to_dict(), indent=2, sort_keys=True) + "\n")
    return directory


def load(path: str | Path, config: LipSimConfig | None = None) -> LipSimNet:
    """Load a LipSim network from our directory / ``.safetensors`` file, or a reference ``.pth``.

    ``config`` is only used for a reference file (see :func:`import_reference`); our
    checkpoints carry their own ``config.json``.
    """
    path = Path(path)
    if path.suffix in REFERENCE_SUFFIXES:
        return import_reference(path, config)
    if path.suffix == ".safetensors":
        weights, config_path = path, path.with_name(CONFIG_FILE)
    else:
        weights, config_path = path / WEIGHTS_FILE, path / CONFIG_FILE
    for needed in (weights, config_path):
        if not needed.is_file():
            raise SuiteError(
                f"LipSim weights: expected the file {needed} (a checkpoint is a directory with {WEIGHTS_FILE} "
                f"and {CONFIG_FILE}, or a reference {'/'.join(REFERENCE_SUFFIXES)} file); it does not exist"
            )
    try:
        cfg = LipSimConfig.from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise SuiteError(f"LipSim config {config_path}: not a valid config ({err})") from err
    net = LipSimNet(cfg)
    _load_checked(net, load_file(str(weights)), str(weights))
    return net


def import_reference(pth_path: str | Path, config: LipSimConfig | None = None) -> LipSimNet:
    """Build the network of a reference LipSim ``.pth`` with the identical function.

    Without ``config`` the architecture is read from the tensor shapes, with the
    reference's two poolings and embedding size 1792 (the released model gives the
    ``small`` preset). The reference's convolutional ``T`` ignores ``q``, so the
    config's ``conv_q_scaling`` is forced off.
    """
    pth_path = Path(pth_path)
    if not pth_path.is_file():
        raise SuiteError(f"LipSim reference checkpoint: expected the file {pth_path}; it does not exist")
    try:
        blob = torch.load(pth_path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for foreign or unsafe pickles
        raise SuiteError(f"LipSim reference checkpoint {pth_path}: cannot be read with weights_only=True ({err})") from err
    state = blob.get("model_state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise SuiteError(f"LipSim reference checkpoint {pth_path}: expected a dict with 'model_state_dict'")

    convs: dict[int, dict[str, torch.Tensor]] = {}
    dense: dict[int, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in state.items():
        if (m := _CONV_KEY.match(key)) is not None:
            convs.setdefault(int(m[1]), {})[m[2]] = tensor
        elif (m := _DENSE_KEY.match(key)) is not None:
            dense.setdefault(int(m[1]), {})[m[2]] = tensor
        elif not (key.endswith("alpha") or _DUPLICATE_KEY.match(key)):
            unknown.append(key)
    if unknown:
        raise SuiteError(f"LipSim reference checkpoint {pth_path}: unexpected entries {unknown[:5]} (not a LipSim model?)")
    if not convs or sorted(convs) != list(range(len(convs))):
        raise SuiteError(f"LipSim reference checkpoint {pth_path}: expected conv layers base.1.0.. ; found {sorted(convs)}")
    if dense and sorted(dense) != list(range(1, len(dense) + 1)):
        raise SuiteError(f"LipSim reference checkpoint {pth_path}: expected dense layers base.2.1.. ; found {sorted(dense)}")

    cfg = (config or _infer_config(convs, dense, pth_path)).replace(conv_q_scaling=False)
    mapped = {f"convs.{i}.{name}": t for i, layer in convs.items() for name, t in layer.items()}
    mapped |= {f"dense.{j - 1}.{name}": t for j, layer in dense.items() for name, t in layer.items()}
    net = LipSimNet(cfg)
    _load_checked(net, mapped, str(pth_path))
    return net


def _infer_config(convs: dict, dense: dict, origin: Path) -> LipSimConfig:
    kernel = convs[0]["kernel"]
    inner, channels, k, _ = kernel.shape
    fields = dict(channels=channels, conv_depth=len(convs), conv_inner=inner, kernel_size=k,
                  n_pools=REFERENCE_N_POOLS, dense_depth=len(dense))
    if dense:
        dense_inner, width = dense[1]["weight"].shape
        side = math.isqrt(width // channels)
        if side * side * channels != width:
            raise SuiteError(f"LipSim reference checkpoint {origin}: dense width {width} is not channels·side²")
        fields |= dict(dense_inner=dense_inner, input_size=side * 4**REFERENCE_N_POOLS,
                       embed_dim=min(REFERENCE_EMBED_DIM, width))
    else:
        raise SuiteError(f"LipSim reference checkpoint {origin}: no dense layers; pass the config explicitly")
    for name, cfg in PRESETS.items():
        if cfg.replace(conv_q_scaling=False) == LipSimConfig(name=name, **fields):
            return LipSimConfig(name=name, **fields)
    return LipSimConfig(name="reference", **fields)


def _load_checked(net: LipSimNet, state: dict[str, torch.Tensor], origin: str) -> None:
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise SuiteError(
            f"LipSim weights {origin} do not match the config {net.config.name!r}: "
            f"missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise SuiteError(
                f"LipSim weights {origin}: {key} has shape {tuple(tensor.shape)}; "
                f"the config {net.config.name!r} expects {tuple(expected[key].shape)}"
            )
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


__all__ = ["save", "load", "import_reference", "WEIGHTS_FILE", "CONFIG_FILE"]
