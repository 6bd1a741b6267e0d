"""A copy-detection grid on the session's Ray cluster: retrieval cells sharded by query, 2AFC and retrieval
attacks each on their own datasets, hashes left out of gradient attacks, the page's copy-detection section."""

import polars as pl

from jobs.benchmark import expand, run
from suite.config import parse_config

COPIES = {"name": "synthetic-copies", "splits": ["test"],
          "options": {"image_size": 16, "originals": 5, "queries_per_original": 2, "distractors": 10}}
TRIPLETS = {"name": "synthetic-2afc", "splits": ["test"], "options": {"image_size": 16, "count": 8}}


def config(tmp_path):
    return parse_config({
        "run": {"name": "copies", "results": str(tmp_path / "results"), "batch_size": 4, "shard_size": 4},
        "metrics": [{"name": "l2"}, {"name": "phash"}],
        "datasets": [COPIES, TRIPLETS],
        "evaluations": [
            {"kind": "natural"},
            {"kind": "attack", "attack": "pgd", "eps": {"l2": [0.5]}, "options": {"steps": 3}},
            {"kind": "attack", "attack": "evasion", "eps": {"l2": [0.5, 2.0]}, "options": {"steps": 5, "n_queries": 20}},
            {"kind": "attack", "attack": "collision", "eps": {"l2": [2.0]}, "options": {"steps": 5, "n_queries": 20}},
            {"kind": "certified", "eps": {"l2": [0.5, 2.0]}},
        ]})


def test_cells_pair_each_attack_with_its_task(tmp_path, cache_dir):
    cells, notes = expand(config(tmp_path))
    kinds = {(c.metric, c.dataset, c.kind, c.attack, c.threat) for c in cells}
    assert ("l2", "synthetic-copies", "attack", "evasion", "query") in kinds
    assert ("l2", "synthetic-copies", "attack", "collision", "collision") in kinds
    assert ("l2", "synthetic-copies", "certified", "", "query") in kinds
    assert ("phash", "synthetic-copies", "attack", "evasion", "query") in kinds  # Square: no gradient needed
    assert not any(c.dataset == "synthetic-copies" and c.attack == "pgd" for c in cells)
    assert not any(c.dataset == "synthetic-2afc" and c.attack in ("evasion", "collision") for c in cells)
    assert not any(c.metric == "phash" and c.attack == "pgd" for c in cells)
    assert any("'pgd' attacks 2AFC triplets" in n for n in notes)
    assert any("phash has no gradient" in n for n in notes)


def test_a_copy_detection_grid_runs_sharded_and_lands_on_the_page(ray_cluster, tmp_path, cache_dir):
    summary = run(config(tmp_path), progress=False)
    assert summary.ok, (summary.failed, summary.violations)
    rows = pl.concat([pl.read_parquet(p) for p in (tmp_path / "results" / "cells").glob("*.parquet")],
                     how="diagonal_relaxed")
    copies = rows.filter(pl.col("dataset") == "synthetic-copies")
    assert copies["task"].unique().to_list() == ["retrieval"]
    natural = copies.filter((pl.col("kind") == "natural") & (pl.col("metric") == "l2"))
    assert natural.height == 10 and natural["sample_id"].n_unique() == 10  # 3 shards, every query once
    page = (tmp_path / "results" / "leaderboard.html").read_text()
    assert "Copy detection" in page
