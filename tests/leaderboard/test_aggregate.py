"""Aggregation with the cells' sidecar specs: settings never merge, worst cases are per-sample minima,
intervals and bounds by hand, the headline ranking and the compact text table."""

from __future__ import annotations

import math

import polars as pl
import pytest

from leaderboard import aggregate, read_store, text_table
from leaderboard.headline import headline_tables
from leaderboard_data import frame, one, rows_for, spec, write
from suite.invariants import BOUND_ATOL, BOUND_RTOL, exceeds_bound
from suite.store import ResultStore, cell_key


def board(root) -> pl.DataFrame:
    view = read_store(root)
    return aggregate(view.rows, view.cells)


def test_two_runs_of_one_attack_with_different_options_are_two_entries(tmp_path):
    store = ResultStore(tmp_path)
    write(store, spec("m", "natural"), [1.0, 1.0, 1.0, 1.0])
    common = dict(attack="pgd", threat="ref", norm="l2", budgets=[0.5])
    write(store, spec("m", "attack", attack_options={"steps": 10}, **common), [1.0, 0.0, 1.0, 0.0])
    write(store, spec("m", "attack", attack_options={"steps": 100}, **common), [0.0, 0.0, 1.0, 0.0])
    agg = board(tmp_path).filter(pl.col("kind") == "attack")
    assert agg.height == 2 and agg["n"].to_list() == [4, 4]  # not one entry of n = 8
    weak, strong = one(agg, options_label="steps=10"), one(agg, options_label="steps=100")
    assert weak["score"] == pytest.approx(50.0) and strong["score"] == pytest.approx(25.0)
    assert weak["standard"] is False and "steps 10 < 100" in weak["nonstandard"]
    assert strong["standard"] is True and strong["nonstandard"] == ""


def test_one_setting_spelled_two_ways_or_run_with_two_seeds_pools(tmp_path):
    store = ResultStore(tmp_path)
    common = dict(attack="pgd", threat="ref", norm="l2", budgets=[0.5])
    write(store, spec("m", "attack", attack_options={}, seed=0, **common), [1.0, 0.0])
    write(store, spec("m", "attack", attack_options={"steps": 20}, seed=1, **common), [1.0, 1.0],
          ids=["s2", "s3"])
    entry = one(board(tmp_path), kind="attack")
    assert entry["n"] == 4 and entry["cells"] == 2 and entry["score"] == pytest.approx(75.0)
    assert entry["options_label"] == "defaults"


def test_different_dataset_fingerprints_are_different_tables(tmp_path):
    store = ResultStore(tmp_path)
    write(store, spec("m", "natural", dataset_fp="aaa"), [1.0, 1.0])
    write(store, spec("m", "natural", dataset_fp="bbb"), [0.0, 0.0])
    agg = board(tmp_path)
    assert sorted(agg["dataset_fp"]) == ["aaa", "bbb"] and sorted(agg["score"]) == [0.0, 100.0]
    assert [t.dataset_fp for t in headline_tables(agg)] == ["aaa", "bbb"]


def _ensemble(store, members: list[dict], worst: list[float], *, seed: int = 0) -> str:
    keys = []
    for member, scores in members:
        keys.append(write(store, spec("m", "attack", seed=seed, threat="ref", norm="l2", budgets=[0.5], **member),
                          scores))
    worst_spec = {"kind": "worst", "members": sorted(keys)}
    key = cell_key(worst_spec)
    label = "+".join(sorted({m["attack"] for m, _ in members}))
    store.write(key, worst_spec, rows_for("m", "worst", worst, attack=label, threat="ref", norm="l2", eps=0.5,
                                          cell=key))
    return key


def test_worst_case_of_two_ensembles_is_the_per_sample_minimum_over_both(tmp_path):
    store = ResultStore(tmp_path)
    write(store, spec("m", "natural"), [1.0, 1.0, 1.0, 1.0])
    _ensemble(store, [({"attack": "pgd", "attack_options": {"steps": 10}}, [1.0, 0.0, 1.0, 0.5])],
              [1.0, 0.0, 1.0, 0.5])
    _ensemble(store, [({"attack": "pgd", "attack_options": {"steps": 100}}, [0.0, 1.0, 1.0, 0.5])],
              [0.0, 1.0, 1.0, 0.5])
    worst = board(tmp_path).filter(pl.col("kind") == "worst")
    assert worst.height == 3  # each ensemble, and the union
    union = one(worst, headline=True)
    assert union["n"] == 4 and union["score"] == pytest.approx(37.5)  # min per sample: 0, 0, 1, 0.5
    assert union["cells"] == 2 and union["standard"] is True  # one member ran pgd at 100 steps
    assert sorted(worst.filter(~pl.col("headline"))["score"]) == [62.5, 62.5]
    assert "steps=10" in union["options_label"] and "steps=100" in union["options_label"]


def test_one_ensemble_stored_twice_is_not_averaged_but_minimised(tmp_path):
    store = ResultStore(tmp_path)
    member = [({"attack": "pgd", "attack_options": {"steps": 10}}, [1.0, 1.0])]
    _ensemble(store, member, [1.0, 0.0], seed=0)
    _ensemble(store, member, [0.0, 1.0], seed=1)
    entry = one(board(tmp_path), kind="worst")
    assert entry["n"] == 2 and entry["cells"] == 2
    assert entry["score"] == pytest.approx(0.0)  # not (50 + 50) / 2


def test_worst_case_inherits_fingerprint_and_lists_its_members(tmp_path):
    store = ResultStore(tmp_path)
    _ensemble(store, [({"attack": "autoattack", "attack_options": {"n_iter": 5, "n_queries": 25}}, [1.0, 0.0]),
                      ({"attack": "mia", "attack_options": {}}, [1.0, 1.0])], [1.0, 0.0])
    agg = board(tmp_path)
    worst = one(agg, kind="worst")
    assert worst["dataset_fp"] == "fp0" and worst["headline"] is True
    assert worst["options_label"] == "autoattack (n_iter=5, n_queries=25) + mia"
    assert worst["standard"] is True  # mia ran at its published setting
    assert worst["nonstandard"] == "autoattack: n_iter 5 < 100, n_queries 25 < 5000"
    aa = one(agg, attack="autoattack")
    assert aa["standard"] is False and aa["headline"] is False


def test_worst_case_without_known_members_keeps_unknown_options():
    rows = rows_for("m", "worst", [1.0, 0.0], threat="ref", norm="l2", eps=0.5)
    entry = one(aggregate(frame(rows)), kind="worst")
    assert entry["attack_options"] == "" and entry["standard"] is None and entry["headline"] is True


def test_interval_is_the_bootstrap_percentile_interval():
    # two samples: resampled means are 0.5, 0.75 or 1.0 with probabilities ¼, ½, ¼
    entry = one(aggregate(frame(rows_for("m", "natural", [1.0, 0.5]))), metric="m")
    assert (entry["ci_low"], entry["ci_high"]) == (pytest.approx(50.0), pytest.approx(100.0))
    lone = one(aggregate(frame(rows_for("m", "natural", [1.0]))), metric="m")
    assert lone["ci_low"] is None and lone["ci_high"] is None
    assert aggregate(frame(rows_for("m", "natural", [1.0, 0.5]))).equals(
        aggregate(frame(rows_for("m", "natural", [1.0, 0.5]))))


def test_interval_agrees_with_the_normal_approximation_for_many_samples():
    scores = [1.0, 0.0] * 200  # p = ½, n = 400: ±1.96·√(p(1−p)/n) = ±4.9 points
    entry = one(aggregate(frame(rows_for("m", "natural", scores))), metric="m")
    half = 1.96 * math.sqrt(0.25 / 400) * 100
    assert entry["ci_low"] == pytest.approx(50 - half, abs=0.8)
    assert entry["ci_high"] == pytest.approx(50 + half, abs=0.8)


def test_over_the_bound_counts_only_excess_beyond_the_invariant_tolerance():
    bound = [53.0, 53.0, 0.25, 0.25]
    reached = [53.0 + 1.5e-5, 53.0 + 1e-3, 0.25 + 2.7e-7, 0.26]
    rows = rows_for("m", "distance", [None] * 4, attack="distance", threat="ref", norm="l2", eps=0.5,
                    reached=reached, bound=bound)
    entry = one(aggregate(frame(rows)), kind="distance")
    assert entry["over_bound"] == 2 and entry["over_bound_roundoff"] == 2
    assert entry["distance_max"] == pytest.approx(53.001)
    flags = frame(rows).select(exceeds_bound())["reached"].to_list()
    assert flags == [False, True, False, True]
    assert 1.5e-5 < 53.0 * BOUND_RTOL + BOUND_ATOL  # the demo's round-off on PSNR's bound is tolerated


def test_minimal_radius_rows_report_median_and_flipped():
    rows = rows_for("m", "minnorm", [None] * 3, attack="minnorm", threat="ref", norm="l2", eps=2.0,
                    radius=[0.5, 1.0, math.inf])
    entry = one(aggregate(frame(rows)), kind="minnorm")
    assert entry["radius_median"] == pytest.approx(1.0) and entry["flipped"] == 2
    assert entry["score"] is None and entry["headline"] is False


def test_headline_ranks_by_mean_rank_over_worst_case_columns():
    rows = []
    for metric, natural, robust in [("a", 0.9, [0.8, 0.1]), ("b", 0.8, [0.7, 0.6]), ("c", 1.0, [0.1, 0.2])]:
        rows += rows_for(metric, "natural", [natural])
        for eps, score in zip([0.5, 1.0], robust):
            rows += rows_for(metric, "worst", [score], threat="ref", norm="l2", eps=eps)
    table, = headline_tables(aggregate(frame(rows)))
    # column 0.5: a 1, b 2, c 3; column 1.0: b 1, c 2, a 3 → means a 2, b 1.5, c 2.5
    assert [(r.metric, r.rank, r.mean_rank) for r in table.rows] == [("b", 1, 1.5), ("a", 2, 2.0), ("c", 3, 2.5)]
    assert [c.kind for c in table.columns] == ["natural", "worst", "worst"]
    assert "mean rank over the 2 worst-case columns" in table.ranked_by()


def test_equal_mean_ranks_share_a_rank():
    rows = rows_for("x", "worst", [0.5], threat="ref", norm="l2", eps=0.5) \
        + rows_for("y", "worst", [0.5], threat="ref", norm="l2", eps=0.5) \
        + rows_for("z", "worst", [0.1], threat="ref", norm="l2", eps=0.5)
    table, = headline_tables(aggregate(frame(rows)))
    assert [r.rank for r in table.rows] == [1, 1, 3]


def test_text_table_is_metric_by_headline_setting(tmp_path):
    store = ResultStore(tmp_path)
    write(store, spec("m", "natural"), [1.0, 0.5])
    write(store, spec("m", "attack", attack="pgd", threat="ref", norm="l2", budgets=[0.5]), [1.0, 0.0])
    _ensemble(store, [({"attack": "pgd", "attack_options": {}}, [1.0, 0.0])], [1.0, 0.0])
    write(store, spec("m", "certified", threat="all", norm="l2", budgets=[0.5]), [0.0, 0.0], radius=[0.1, 0.1])
    table = text_table(board(tmp_path))
    header = table.splitlines()[1]
    assert [h.strip() for h in header.strip("|").split("|")] == ["metric", "rank", "natural", "worst ℓ2 0.5", "n"]
    assert "pgd" not in table and "75.00" in table and "50.00" in table
