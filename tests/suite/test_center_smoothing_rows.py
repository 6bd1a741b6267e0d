"""Distance rows bounded by center smoothing (``options.bound = "smoothing"``), end to end:
config → cell → attack (without the bound's options) → ``evaluate`` → rows → invariants.

A random linear embedding with ``1 − cos`` stands in for a deep metric without a Lipschitz
certificate: it is cheap enough for a few thousand noisy copies per image.
"""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

import metrics
from jobs.tasks import build_attack
from metrics.base import EmbeddingMetric
from suite import datasets
from suite.cell import Cell
from suite.config import parse_config, split_distance_options
from suite.errors import SuiteError
from suite.evaluate import evaluate
from suite.invariants import EXCESS_LEVEL, check_invariants, improbable_excess
from suite.schema import ROW_SCHEMA, validate_rows
from suite.smoothed import detect_output

DATA = {"image_size": 16, "count": 8}
#: small samples, so large alpha and delta: n0 = 300 gives Δ₁ = 0.078 ≤ delta (and the check a 4σ margin)
SMOOTHING = {"bound": "smoothing", "sigma": 0.25, "n0": 300, "n": 300, "alpha": 0.1, "delta": 0.2}


class RandomCosineEmbedding(EmbeddingMetric):
    """``1 − cos`` between ``A·vec(x) + b``: an embedding metric with no certificate."""

    name = "random-cosine"

    def __init__(self, dim: int = 3 * 16 * 16, out: int = 4, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("a", torch.randn(out, dim, generator=gen, dtype=torch.float64) / math.sqrt(dim))
        self.register_buffer("b", torch.tensor([0.0] * (out - 1) + [2.0], dtype=torch.float64))

    def embed(self, x):
        return x.flatten(1).double() @ self.a.T + self.b

    def compare(self, ex, ey):
        return 1 - torch.nn.functional.cosine_similarity(ex, ey, dim=1)


def _options(**changes) -> dict:
    """Distance options as a config gives them to the cell (checked, defaults filled in; ``None`` drops one)."""
    options = {k: v for k, v in {"steps": 3, **SMOOTHING, **changes}.items() if v is not None}
    config = parse_config({"metrics": [{"name": "l2"}], "datasets": [{"name": "synthetic-2afc"}],
                           "evaluations": [{"kind": "distance", "eps": {"l2": [0.1]}, "options": options}]})
    return config.evaluations[0].options


def _cell(eps: float, options: dict, batch_size: int = 8, metric: str = "random-cosine", limit=None) -> Cell:
    return Cell(metric=metric, metric_name=metric, metric_options={}, metric_id="x", dataset="synthetic-2afc",
                dataset_options=DATA, split="test", limit=limit, dataset_fp="fp", kind="distance",
                attack="distance", attack_name="distance", attack_options=options, threat="ref", norm="l2",
                budgets=(eps,), batch_size=batch_size)


def _run(eps: float, options: dict | None = None, metric=None, batch_size: int = 8, limit=None) -> list[dict]:
    """Rows of a distance cell on the first ``limit`` samples (all 8 by default)."""
    options = _options() if options is None else options
    cell = _cell(eps, options, batch_size, limit=limit)
    attack = build_attack("distance", "distance", options, norm="l2", eps=eps, threat="ref", seed=0)
    data = datasets.load("synthetic-2afc", split="test", limit=limit, **DATA)
    return evaluate(cell, metric or RandomCosineEmbedding(), data, attack, device="cpu")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    import os

    os.environ["LIPSIM_SUITE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        yield _run(0.05)
    finally:
        os.environ.pop("LIPSIM_SUITE_CACHE", None)


def test_the_config_completes_the_bound_options_and_the_attack_gets_only_its_own():
    options = _options()
    assert options == {"steps": 3, "bound": "smoothing", "sigma": 0.25, "n0": 300, "n": 300, "alpha": 0.1,
                       "delta": 0.2, "chunk": 256, "output": "auto"}
    attack_options, bound = split_distance_options(options)
    assert attack_options == {"steps": 3} and bound["bound"] == "smoothing"
    attack = build_attack("distance", "distance", options, norm="l2", eps=0.1, threat="ref", seed=0)
    assert attack.steps == 3
    # the bound's options change the rows: they are part of the cell key; "lipschitz" is the default, no key change
    assert _cell(0.1, options).key != _cell(0.1, {"steps": 3}).key
    assert _options(sigma=0.5) != options
    plain = parse_config({"metrics": [{"name": "l2"}], "datasets": [{"name": "synthetic-2afc"}],
                          "evaluations": [{"kind": "distance", "eps": {"l2": [0.1]},
                                           "options": {"steps": 3, "bound": "lipschitz"}}]})
    assert plain.evaluations[0].options == {"steps": 3}
    defaults = _options(n0=None, n=None, alpha=None, delta=None)
    assert defaults["n0"] == 10_000 and defaults["n"] == 100_000 and defaults["alpha"] == 0.01


@pytest.mark.parametrize("change, message", [
    ({"bound": "gaussian"}, "options.bound must be one of lipschitz, smoothing"),
    ({"sigma": None}, "needs options.sigma"),
    ({"sigma": 0.0}, "sigma must be a finite number > 0"),
    ({"n0": 20}, "n0 = 20 gives Δ₁ = .* use n0 ≥"),
    ({"delta": 0.5}, r"delta must be in \(0, ½\)"),
    ({"alpha": 1.5}, r"alpha must be in \(0, 1\)"),
    ({"output": "l1"}, "options.output must be one of auto, cosine, euclidean"),
    ({"candidates": 1}, "1 candidates miss"),
    ({"bound": None}, "options.sigma, options.n0, .* only apply with bound = \"smoothing\""),
])
def test_bad_bound_options_are_one_line_errors(change, message):
    options = {"steps": 3, **SMOOTHING, **change}
    options = {k: v for k, v in options.items() if v is not None}
    with pytest.raises(SuiteError, match=message) as err:
        parse_config({"metrics": [{"name": "l2"}], "datasets": [{"name": "synthetic-2afc"}],
                      "evaluations": [{"kind": "distance", "eps": {"l2": [0.1]}, "options": options}]})
    assert "\n" not in str(err.value) and "[[evaluations]] #1" in str(err.value)


def test_rows_are_complete_and_hold_the_smoothed_bound_at_a_small_budget(small):
    rows = small
    assert len(rows) == 8 and all(set(r) == set(ROW_SCHEMA) for r in rows)
    frame = validate_rows(rows)  # the store accepts them as they are
    assert frame["bound_alpha"].to_list() == [0.1] * 8
    assert all(r["reached"] is not None and math.isfinite(r["bound"]) and r["bound"] < 2 for r in rows)
    assert all(0 <= r["reached"] <= r["bound"] for r in rows)
    assert all(r["reached_base"] > 0 for r in rows)  # the base metric's d(x, x_adv), kept beside
    assert all(r["passes"] == (2 * 300 + 300 + 2) + 2 * 300 for r in rows)  # at x, then at x_adv
    assert all(r["d0"] is None and r["score"] is None for r in rows)
    assert check_invariants(frame) == []


def test_the_noise_does_not_depend_on_the_batch(small):
    # the noise is seeded per sample id; the attack's random start (hence x_adv, reached) is seeded per batch
    again = _run(0.05, batch_size=2, limit=3)
    assert [(r["sample_id"], r["bound"]) for r in again] == [(r["sample_id"], r["bound"]) for r in small[:3]]


def test_a_budget_too_large_for_n_gives_the_trivial_bound(cache_dir):
    rows = _run(100.0, limit=2)
    assert all(r["bound"] == 2.0 for r in rows)  # 1 − cos never exceeds 2
    assert all(r["reached"] is None or r["reached"] <= 2.0 for r in rows)


def test_lipschitz_rows_say_their_bound_is_exact(cache_dir):
    rows = _run(0.5, {"steps": 3}, metric=metrics.load("l2"))
    assert all(r["bound_alpha"] == 0.0 and r["reached_base"] == r["reached"] <= r["bound"] + 1e-6 for r in rows)
    rows = _run(0.5, {"steps": 3})  # no certificate: no bound, nothing to say about it
    assert all(r["bound"] is None and r["bound_alpha"] is None and r["reached_base"] == r["reached"] for r in rows)


def test_the_output_distance_is_asked_of_the_metric(cache_dir):
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    assert detect_output(RandomCosineEmbedding(), x, y) == "cosine"
    assert detect_output(metrics.load("l2"), x, y) == "euclidean"
    with pytest.raises(SuiteError, match="metric 'psnr' measures neither"):
        detect_output(metrics.load("psnr"), x, y)
    # pixel ℓ2 smoothed: the center is one noisy image, so both sides are of the noise's size σ·√(3·16·16)
    rows = _run(0.05, metric=metrics.load("l2"), limit=2)
    assert all(r["reached"] <= r["bound"] < math.inf for r in rows if r["reached"] is not None)


def test_a_metric_without_an_embedding_is_refused_before_any_work(cache_dir):
    with pytest.raises(SuiteError, match="bound \"smoothing\" .* metric 'ssim' has none") as err:
        _run(0.05, metric=metrics.load("ssim"))
    assert "\n" not in str(err.value)


def test_the_invariant_counts_smoothing_excesses_and_flags_only_an_improbable_count(small):
    frame = validate_rows(small)
    # one excess among 8 rows at α = 0.1 is expected now and then: not a violation
    one = frame.with_columns(reached=pl.when(pl.col("sample_id") == frame["sample_id"][0])
                             .then(pl.col("bound") + 0.1).otherwise(pl.col("reached")))
    assert check_invariants(one) == []
    many = frame.with_columns(reached=pl.col("bound") + 0.1)
    problems = check_invariants(many)
    assert len(problems) == 1 and "center-smoothing bound in 8 of 8 rows" in problems[0]
    # the same excesses on an exact (Lipschitz) bound are each a violation
    exact = many.with_columns(bound_alpha=pl.lit(0.0))
    problems = check_invariants(exact)
    assert len(problems) == 1 and "beyond the certified bound" in problems[0]
    # abstentions at the attacked point (no reached) are not counted
    assert check_invariants(many.with_columns(reached=pl.lit(None, dtype=pl.Float64))) == []


def test_improbable_excess_is_the_binomial_tail():
    assert improbable_excess(0, 100, 0.05) == (False, 1.0)
    bad, p = improbable_excess(12, 12, 0.05)
    assert bad and p == pytest.approx(0.05 ** 12)
    bad, p = improbable_excess(10, 100, 0.05)  # twice the expected 5: unusual, not proof
    assert not bad and EXCESS_LEVEL < p < 0.05


def test_the_leaderboard_keeps_the_bound_apart_and_never_calls_its_excess_broken(small):
    from leaderboard import aggregate
    from leaderboard.cells import describe_cells

    options = _options()
    smoothed, lipschitz = _cell(0.05, options), _cell(0.05, {"steps": 3})
    cells = describe_cells({smoothed.key: smoothed.spec(), lipschitz.key: lipschitz.spec()})
    line = {r["cell"]: r for r in cells.iter_rows(named=True)}
    # the attack's own options are judged as usual; the bound's make another entry and say so
    assert line[smoothed.key]["standard"] is line[lipschitz.key]["standard"] is False  # steps 3 < 20
    assert line[smoothed.key]["attack_options"] != line[lipschitz.key]["attack_options"]
    assert "center-smoothing bound: " in line[smoothed.key]["options_label"]
    assert "sigma=0.25" in line[smoothed.key]["options_label"]
    over = validate_rows(small).with_columns(reached=pl.col("bound") + 0.1)
    entry = aggregate(over, cells).row(0, named=True)
    assert entry["n"] == 8 and entry["over_bound"] == 0 and entry["over_bound_roundoff"] == 0
    exact = over.with_columns(bound_alpha=pl.lit(0.0))
    assert aggregate(exact, cells).row(0, named=True)["over_bound"] == 8
