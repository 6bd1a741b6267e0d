"""Retrieval cells through ``suite.evaluate.evaluate``: complete rows, certificates that hold against the
evasion attack, shards that add up to the whole cell, and clear errors for what retrieval does not do."""

import pytest
import torch

import attacks
import metrics
from jobs.tasks import sample_range
from suite import datasets
from suite.cell import Cell
from suite.errors import SuiteError
from suite.evaluate import evaluate
from suite.invariants import check_invariants
from suite.schema import ROW_SCHEMA, validate_rows

OPTIONS = {"image_size": 16, "originals": 6, "queries_per_original": 2, "distractors": 12}


@pytest.fixture(scope="module")
def data():
    return datasets.load("synthetic-copies", split="test", **OPTIONS)


def cell(data, **kw):
    base = dict(metric="l2", metric_name="l2", metric_options={}, metric_id="x", dataset="synthetic-copies",
                dataset_options=OPTIONS, split="test", limit=None, dataset_fp=data.fingerprint(), kind="natural",
                batch_size=5)
    return Cell(**{**base, **kw})


def test_natural_rows_are_complete_one_per_query(data, one_thread):
    c = cell(data)
    rows = evaluate(c, metrics.load("l2"), data)
    assert len(rows) == len(data) == 12
    assert set(rows[0]) == set(ROW_SCHEMA)
    frame = validate_rows(rows)
    assert frame["task"].unique().to_list() == ["retrieval"]
    assert frame["sample_id"].to_list() == [data.sample_id(i) for i in range(len(data))]
    # score is 1 exactly when the nearest true original is closer than every non-match
    assert all(r["score"] == float(r["d0"] < r["d1"]) for r in rows)
    assert all(0 < r["ap"] <= 1 for r in rows)
    assert all(r["ap"] == 1.0 for r in rows if r["score"] == 1.0)  # one original ranked first: AP 1


def test_shards_concatenate_to_the_whole_cell(data, one_thread):
    c = cell(data, kind="certified", threat="query", norm="l2", budgets=(0.05, 0.2))
    whole = evaluate(c, metrics.load("l2"), data)
    parts = [row for start, stop in ((0, 5), (5, 10), (10, 12))
             for row in evaluate(c, metrics.load("l2"), sample_range(data, start, stop))]
    key = lambda r: (r["eps"], r["sample_id"])  # noqa: E731
    drop = ("seconds",)
    assert sorted(({k: v for k, v in r.items() if k not in drop} for r in whole), key=key) == \
        sorted(({k: v for k, v in r.items() if k not in drop} for r in parts), key=key)


@pytest.mark.parametrize("name", ["l2", "lipsim"])
def test_certified_matches_survive_the_evasion_attack_below_their_radius(data, name, one_thread):
    """The certificate of each metric, held against a strong evasion attack at 0.95 × each query's radius;
    the same attack at a large budget does break matches, so the check can fail."""
    metric = metrics.load(name) if name == "l2" else metrics.load("lipsim", preset="tiny")
    cert = validate_rows(evaluate(cell(data, metric=name, kind="certified", threat="query", norm="l2",
                                       budgets=(0.0,)), metric, data))
    radius = dict(zip(cert["sample_id"], cert["radius"]))
    certified = [i for i in range(len(data)) if radius[data.sample_id(i)] > 1e-3]
    assert certified, "no certified query: the test would check nothing"
    attack = attacks.load("evasion", norm="l2", eps=1.0, threat="ref", seed=0, steps=40, restarts=2)
    for i in certified:
        one = sample_range(data, i, i + 1)
        eps = 0.95 * radius[data.sample_id(i)]
        rows = evaluate(cell(data, metric=name, kind="attack", attack="evasion", attack_name="evasion",
                             threat="query", norm="l2", budgets=(eps,)), metric, one, attack)
        assert rows[0]["score"] == 1.0, (name, data.sample_id(i), eps)
    big = evaluate(cell(data, metric=name, kind="attack", attack="evasion", attack_name="evasion", threat="query",
                        norm="l2", budgets=(8.0,)), metric, data, attack)
    assert sum(r["score"] for r in big) < sum(1 for r in cert.iter_rows(named=True) if r["score"] == 1.0)


def test_evasion_ladder_is_monotone_and_rows_pass_the_invariants(data, one_thread):
    metric = metrics.load("l2")
    natural = evaluate(cell(data), metric, data)
    attack = attacks.load("evasion", norm="l2", eps=1.0, threat="ref", seed=0, steps=10)
    attacked = evaluate(cell(data, kind="attack", attack="evasion", attack_name="evasion", threat="query",
                             norm="l2", budgets=(0.25, 1.0, 4.0)), metric, data, attack)
    certified = evaluate(cell(data, kind="certified", threat="query", norm="l2", budgets=(0.25, 1.0, 4.0)),
                         metric, data)
    by_eps = {e: sum(r["score"] for r in attacked if r["eps"] == e) for e in (0.25, 1.0, 4.0)}
    assert by_eps[0.25] >= by_eps[1.0] >= by_eps[4.0]
    assert by_eps[4.0] < sum(r["score"] for r in natural)
    frame = validate_rows(natural + attacked + certified)
    assert check_invariants(frame) == []


def test_collision_rows_name_query_and_target(data, one_thread):
    attack = attacks.load("collision", norm="l2", eps=1.0, threat="ref", seed=0, steps=10)
    rows = evaluate(cell(data, kind="attack", attack="collision", attack_name="collision", threat="collision",
                         norm="l2", budgets=(0.5, 8.0)), metrics.load("l2"), data, attack)
    gallery = set(data.gallery_ids())
    assert all(r["sample_id"].split(">")[1] in gallery for r in rows)
    assert len({r["sample_id"] for r in rows}) == len(data)
    resisted = {e: sum(r["score"] for r in rows if r["eps"] == e) for e in (0.5, 8.0)}
    assert resisted[8.0] <= resisted[0.5] and resisted[8.0] < len(data)  # framing works with a large budget


def test_what_retrieval_does_not_do_is_a_one_line_error(data):
    metric = metrics.load("l2")
    pgd = attacks.load("pgd", norm="l2", eps=0.5, threat="ref", seed=0)
    with pytest.raises(SuiteError, match="needs a retrieval attack"):
        evaluate(cell(data, kind="attack", attack="pgd", attack_name="pgd", threat="query", norm="l2",
                      budgets=(0.5,)), metric, data, pgd)
    with pytest.raises(SuiteError, match="kinds natural, attack and certified"):
        evaluate(cell(data, kind="distance", attack="distance", attack_name="distance", threat="ref", norm="l2",
                      budgets=(0.5,)), metric, data, None)
    with pytest.raises(SuiteError, match="has no certificate"):
        evaluate(cell(data, kind="certified", threat="query", norm="l2", budgets=(0.5,)), metrics.load("ssim"), data)
    with pytest.raises(SuiteError, match="Lipschitz certificate only"):
        evaluate(cell(data, kind="certified", attack="smoothing", attack_name="smoothing", threat="query",
                      norm="l2", budgets=(0.5,)), metric, data)


def test_pixel_match_radius_equals_the_bisector_minimum(data):
    from metrics.classic import bisector_radius
    from suite.types import Gallery

    metric = metrics.load("l2")
    gallery = torch.cat(list(data.gallery_batches(64)))
    queries = next(iter(data.batches(len(data))))
    radius = metric.certified_match_radius(queries.images, Gallery(data.gallery_ids(), gallery), queries.matches)
    for b, match in enumerate(queries.matches):
        d = (gallery - queries.images[b]).flatten(1).norm(dim=1)
        star = min(match, key=lambda k: float(d[k]))
        others = [k for k in range(len(gallery)) if k not in match]
        if float(d[star]) >= float(d[others].min()):
            assert radius[b] == 0
            continue
        q = queries.images[b:b + 1].expand(len(others), -1, -1, -1)
        expected = bisector_radius(q.double(), gallery[[star] * len(others)].double(), gallery[others].double()).min()
        assert float(radius[b]) == pytest.approx(float(expected), rel=1e-9)
