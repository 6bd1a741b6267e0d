"""Sample shards, without Ray: boundaries, and a sharded cell's rows equal to the unsharded cell's."""

import polars as pl
import pytest

from jobs.benchmark import expand
from jobs.shards import SampleRange, Shard, merge, spans
from jobs.tasks import build_dataset, run_cell, run_shard
from suite.config import parse_config
from suite.errors import SuiteError
from suite.schema import validate_rows

#: the time a batch took differs between any two runs; every other column must not
VALUES = [c for c in validate_rows([]).columns if c != "seconds"]


def test_spans_cover_every_sample_once_on_batch_boundaries():
    assert spans(20, 8, 4) == [(0, 8), (8, 16), (16, 20)]
    assert spans(20, 10, 4) == [(0, 8), (8, 16), (16, 20)]  # rounded down to whole batches
    assert spans(20, 3, 4) == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20)]  # at least one batch
    assert spans(20, 256, 4) == [(0, 20)]
    assert spans(0, 8, 4) == [(0, 0)]  # an empty cell is one empty shard
    for size, shard, batch in [(97, 32, 8), (5, 1, 1), (64, 64, 16)]:
        covered = [i for start, stop in spans(size, shard, batch) for i in range(start, stop)]
        assert covered == list(range(size))
        assert all(start % batch == 0 for start, _ in spans(size, shard, batch))


def test_a_sample_range_is_a_window_of_its_dataset(cache_dir):
    dataset = build_dataset("synthetic-2afc", {"image_size": 32, "count": 10}, "test", None)
    window = SampleRange(dataset, 4, 9)
    assert len(window) == 5 and window.sample_id(0) == dataset.sample_id(4)
    assert [window.sample_id(i) for i in range(5)] == [dataset.sample_id(i) for i in range(4, 9)]
    assert [b.sample_id for b in window.batches(2)][-1] == [dataset.sample_id(8)]
    with pytest.raises(IndexError):
        window[5]
    with pytest.raises(SuiteError, match="outside the dataset"):
        SampleRange(dataset, 4, 11)


def test_merge_refuses_a_cell_with_a_missing_shard_and_ignores_foreign_ones():
    a, b = pl.DataFrame({"x": [1, 2]}), pl.DataFrame({"x": [3]})
    assert merge({(2, 3): b, (0, 2): a, (0, 1): b}, [(0, 2), (2, 3)])["x"].to_list() == [1, 2, 3]
    with pytest.raises(SuiteError, match=r"shards \[\(2, 3\)\] are missing"):
        merge({(0, 2): a}, [(0, 2), (2, 3)])


def test_sharded_rows_equal_unsharded_rows_for_every_kind(tmp_path, cache_dir, one_thread):
    """Per-sample values of a sharded cell equal the unsharded cell's, in the same order: shards are
    whole batches, and attacks draw their random starts per sample (from the sample id)."""
    config = parse_config({
        "run": {"name": "s", "results": str(tmp_path / "r"), "batch_size": 4},
        "metrics": [{"name": "lipsim", "options": {"preset": "tiny"}}],
        "datasets": [{"name": "synthetic-2afc", "splits": ["test"], "options": {"image_size": 32, "count": 10}}],
        "evaluations": [
            {"kind": "natural"},
            {"kind": "certified", "eps": [0.05, 0.2]},
            {"kind": "attack", "attack": "pgd", "eps": {"l2": [0.05, 0.5]}, "options": {"steps": 3}},
            {"kind": "distance", "eps": {"l2": [0.1]}, "options": {"steps": 2}},
        ],
    })
    cells, _ = expand(config)
    assert sorted(c.kind for c in cells) == ["attack", "certified", "distance", "natural"]
    for cell in cells:
        whole = validate_rows(run_cell(cell, device="cpu"))
        parts = {(start, stop): validate_rows(run_shard(Shard(cell, start, stop), device="cpu"))
                 for start, stop in spans(10, 4, cell.batch_size)}
        sharded = merge(parts, spans(10, 4, cell.batch_size))
        assert sharded.height == whole.height == 10 * len(cell.budgets), cell.kind
        assert sharded.select(VALUES).equals(whole.select(VALUES)), cell.describe()
