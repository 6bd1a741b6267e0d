import pytest
import torch

from suite.errors import SuiteError
from suite.evaluate import Cell, check_attacked, evaluate_cell
from suite.types import Triplets

OPTIONS = {"image_size": 32, "count": 24}


def cell(**kw):
    base = dict(metric="l2", metric_name="l2", metric_options={}, metric_id="x", dataset="synthetic-2afc",
                dataset_options=OPTIONS, split="test", limit=None, dataset_fp="fp", kind="natural", batch_size=10)
    return Cell(**{**base, **kw})


def test_natural_rows_carry_the_design_columns(cache_dir):
    rows = evaluate_cell(cell())
    assert len(rows) == 24
    expected = {"metric", "metric_id", "dataset", "split", "kind", "attack", "threat", "norm", "eps", "sample_id",
                "judge", "d0", "d1", "score", "radius", "seconds", "suite_version"}
    assert expected <= set(rows[0])
    assert sum(r["score"] for r in rows) / len(rows) > 0.6


def test_certified_rows_one_per_sample_and_budget(cache_dir):
    rows = evaluate_cell(cell(kind="certified", threat="ref", norm="l2", eps_list=(0.1, 1.0, 100.0)))
    assert len(rows) == 72
    by_eps = {e: [r for r in rows if r["eps"] == e] for e in (0.1, 1.0, 100.0)}
    assert sum(r["score"] for r in by_eps[100.0]) <= sum(r["score"] for r in by_eps[0.1])
    assert all(r["radius"] >= 0 for r in rows)


def test_an_attack_that_leaves_its_threat_model_is_an_error():
    clean = Triplets(torch.full((2, 3, 4, 4), 0.5), torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4),
                     torch.tensor([0.9, 0.1]), ["a", "b"])
    moved = clean.with_images(clean.ref, clean.x0 + 0.01, clean.x1)
    with pytest.raises(SuiteError, match="moved x0 beyond"):
        check_attacked(clean, moved, cell(kind="attack", attack="bad", threat="ref", norm="l2", eps=1.0))
    far = clean.with_images(clean.ref + 0.3, clean.x0, clean.x1)
    with pytest.raises(SuiteError, match="moved ref beyond.*on samples a, b"):
        check_attacked(clean, far, cell(kind="attack", attack="bad", threat="ref", norm="linf", eps=0.1))
