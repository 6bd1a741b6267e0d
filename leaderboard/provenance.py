"""Where each entry comes from: weights, training recipe, dataset and attack options, versions, dates.

Everything here is read from the cells' sidecar specs (``Cell.spec()``) and, for a
trained LipSim, from the files next to its weights (``config.json``, ``metrics.jsonl``,
``spec.json`` written by ``lipsim train``). Nothing is recomputed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

#: metrics with no learned weights at all (closed-form)
CLOSED_FORM = ("l2", "euclidean", "psnr", "ssim")

#: metrics that draw random weights when no ``weights`` option is given
RANDOM_WITHOUT_WEIGHTS = ("lipsim",)

RANDOM_MARK = "(random weights)"


def metrics_provenance(specs: dict[str, dict]) -> dict[tuple[str, str], dict[str, Any]]:
    """One record per (metric label, metric id) found in the specs of evaluated cells.

    Keys of a record: ``metric``, ``metric_id``, ``metric_name``, ``metric_options``,
    ``weights`` (the weights path or ``None``), ``random_weights`` (bool), ``weights_note``
    (one line for the page), ``recipe`` (:func:`recipe_summary` or ``None``).
    """
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for spec in specs.values():
        if spec.get("kind") == "worst" or "metric" not in spec:
            continue
        key = (str(spec["metric"]), str(spec.get("metric_id", "")))
        if key in out:
            continue
        options = spec.get("metric_options") if isinstance(spec.get("metric_options"), dict) else {}
        name = str(spec.get("metric_name") or spec["metric"])
        weights = options.get("weights")
        random = (RANDOM_MARK in key[0] or options.get("pretrained") is False
                  or (name in RANDOM_WITHOUT_WEIGHTS and not weights))
        out[key] = {
            "metric": key[0], "metric_id": key[1], "metric_name": name, "metric_options": options,
            "weights": None if weights is None else str(weights), "random_weights": bool(random),
            "weights_note": _weights_note(name, weights, random),
            "recipe": recipe_summary(weights) if weights and not random else None,
        }
    return out


def _weights_note(name: str, weights: Any, random: bool) -> str:
    if random:
        return "RANDOM WEIGHTS: untrained network, a baseline only, not the published metric"
    if weights:
        return f"weights {weights}"
    if name in CLOSED_FORM:
        return "no learned weights (closed-form metric)"
    return "the metric's default published weights"


def recipe_summary(weights: Any) -> dict[str, Any] | None:
    """What ``lipsim train`` recorded next to the weights: the architecture (``config.json``), the
    recipe (``spec.json``'s ``recipe``) and the training log (``metrics.jsonl``: epochs, last loss,
    last and best validation score); ``None`` when the weights are not one of our training folders."""
    folder = Path(str(weights))
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        return None
    config = _json(folder / "config.json")
    spec = _json(folder / "spec.json")
    log = _jsonl(folder / "metrics.jsonl")
    if config is None and log is None:
        return None
    out: dict[str, Any] = {"folder": str(folder)}
    if config:
        out["architecture"] = {k: config[k] for k in ("name", "embed_dim", "channels", "conv_depth", "dense_depth",
                                                      "input_size") if k in config}
    recipe = (spec or {}).get("recipe")
    if isinstance(recipe, dict):
        out["recipe"] = {k: recipe[k] for k in ("stage", "preset", "dataset", "split", "dataset_options", "epochs",
                                                "batch_size", "lr", "margin", "teacher", "seed") if k in recipe}
        if spec.get("recipe_hash"):
            out["recipe_hash"] = spec["recipe_hash"]
    if log:
        scores = [e["val_score"] for e in log if isinstance(e.get("val_score"), (int, float))]
        last = log[-1]
        out["log"] = {"epochs": len(log), "last_loss": last.get("loss"),
                      "last_val_score": last.get("val_score"), "best_val_score": max(scores) if scores else None}
    return out


def datasets_provenance(specs: dict[str, dict]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``(dataset, split, fingerprint)`` → ``{"dataset_options", "limit"}`` from the evaluated cells' specs."""
    out = {}
    for spec in specs.values():
        if spec.get("kind") == "worst" or "dataset" not in spec:
            continue
        key = (str(spec["dataset"]), str(spec.get("split", "")), str(spec.get("dataset_fp") or ""))
        out.setdefault(key, {"dataset_options": spec.get("dataset_options") or {}, "limit": spec.get("limit")})
    return out


def git_commit(where: Path | None = None) -> str | None:
    """The commit checked out where the leaderboard code lives (``git rev-parse``, read-only), or ``None``.

    It is the commit that *built the page*: cells do not record the commit that computed them.
    """
    where = where or Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=5, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def _json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _jsonl(path: Path) -> list[dict] | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    out = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out or None


__all__ = ["CLOSED_FORM", "datasets_provenance", "git_commit", "metrics_provenance", "recipe_summary"]
