import pytest
import torch

import metrics
from suite import datasets
from suite.cell import Cell
from suite.errors import SuiteError
from suite.evaluate import check_attacked, evaluate
from suite.schema import ROW_SCHEMA, validate_rows
from suite.types import Triplets

OPTIONS = {"image_size": 32, "count": 24}


def cell(**kw):
    base = dict(metric="l2", metric_name="l2", metric_options={}, metric_id="x", dataset="synthetic-2afc",
                dataset_options=OPTIONS, split="test", limit=None, dataset_fp="fp", kind="natural", batch_size=10)
    return Cell(**{**base, **kw})


def data():
    return datasets.load("synthetic-2afc", split="test", **OPTIONS)


def test_natural_rows_are_complete_and_carry_the_cell_key(cache_dir):
    c = cell()
    rows = evaluate(c, metrics.load("l2"), data())
    assert len(rows) == 24
    assert set(rows[0]) == set(ROW_SCHEMA)
    assert all(r["cell"] == c.key and r["eps"] == 0.0 for r in rows)
    assert validate_rows(rows).height == 24  # the store accepts them as they are
    assert sum(r["score"] for r in rows) / len(rows) > 0.6


def test_certified_rows_one_per_sample_and_budget(cache_dir):
    rows = evaluate(cell(kind="certified", threat="ref", norm="l2", budgets=(0.1, 1.0, 100.0)),
                    metrics.load("l2"), data())
    assert len(rows) == 72
    by_eps = {e: [r for r in rows if r["eps"] == e] for e in (0.1, 1.0, 100.0)}
    assert sum(r["score"] for r in by_eps[100.0]) <= sum(r["score"] for r in by_eps[0.1])
    assert all(r["radius"] >= 0 for r in rows)


def test_distance_rows_hold_reached_and_bound_in_their_own_columns(cache_dir):
    import attacks

    attack = attacks.load_distance("distance", norm="l2", eps=0.5, steps=3)
    rows = evaluate(cell(kind="distance", attack="distance", attack_name="distance", threat="ref", norm="l2",
                         budgets=(0.5,)), metrics.load("l2"), data(), attack)
    assert all(r["d0"] is None and r["d1"] is None and r["score"] is None for r in rows)
    assert all(0 < r["reached"] <= r["bound"] + 1e-6 and r["bound"] == pytest.approx(0.5) for r in rows)


def test_a_cell_of_one_kind_refuses_an_attack_of_the_other(cache_dir):
    import attacks

    with pytest.raises(SuiteError, match="kind 'attack' needs a 2AFC attack"):
        evaluate(cell(kind="attack", attack="distance", threat="ref", norm="l2", budgets=(0.5,)),
                 metrics.load("l2"), data(), attacks.load_distance("distance", eps=0.5))


def test_images_outside_the_unit_range_are_an_error_naming_the_dataset():
    class Shifted:
        def batches(self, size):
            yield Triplets(torch.full((2, 3, 8, 8), 0.5), torch.full((2, 3, 8, 8), 1.5), torch.zeros(2, 3, 8, 8),
                           torch.tensor([0.9, 0.1]), ["a", "b"])

        def __len__(self):
            return 2

    with pytest.raises(SuiteError, match=r"values in \[0, 1.5\]; metric 'l2' takes images in \[0, 1\]"):
        evaluate(cell(), metrics.load("l2"), Shifted())


def test_a_metric_declaring_another_input_range_is_refused(cache_dir):
    metric = metrics.load("l2")
    metric.input_range = (-1.0, 1.0)
    with pytest.raises(SuiteError, match=r"declares input_range \(-1, 1\)"):
        evaluate(cell(), metric, data())


def test_a_similarity_is_scored_with_higher_meaning_closer(cache_dir):
    distance = evaluate(cell(), metrics.load("l2"), data())

    class Similarity(metrics.EmbeddingMetric):
        lower_is_better = False

        def embed(self, x):
            return x.flatten(1)

        def compare(self, ex, ey):
            return -((ex - ey).pow(2).sum(1) + 1e-20).sqrt()

    similarity = evaluate(cell(), Similarity(), data())
    assert [r["score"] for r in similarity] == [r["score"] for r in distance]


def test_an_attack_that_leaves_its_threat_model_is_an_error():
    clean = Triplets(torch.full((2, 3, 4, 4), 0.5), torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4),
                     torch.tensor([0.9, 0.1]), ["a", "b"])
    moved = clean.with_images(clean.ref, clean.x0 + 0.01, clean.x1)
    with pytest.raises(SuiteError, match="moved x0 beyond"):
        check_attacked(clean, moved, cell(kind="attack", attack="bad", threat="ref", norm="l2", budgets=(1.0,)))
    far = clean.with_images(clean.ref + 0.3, clean.x0, clean.x1)
    with pytest.raises(SuiteError, match="moved ref beyond.*on samples a, b"):
        check_attacked(clean, far, cell(kind="attack", attack="bad", threat="ref", norm="linf", budgets=(0.1,)))


class CountingAttack:
    """Wraps an attack and records which samples each budget attacked."""

    name = "counting"

    def __init__(self, inner):
        self.inner, self.norm, self.eps, self.threat, self.calls = inner, inner.norm, inner.eps, inner.threat, []

    def perturb(self, metric, batch):
        self.calls.append((self.eps, list(batch.sample_id)))
        self.inner.eps = self.eps
        return self.inner.perturb(metric, batch)


def test_an_attack_ladder_is_monotone_attacks_only_survivors_and_never_beats_one_budget_alone(cache_dir):
    import attacks

    budgets = (0.5, 2.0, 8.0)
    ladder_cell = cell(kind="attack", attack="pgd", attack_name="pgd", threat="ref", norm="l2", budgets=budgets)
    counting = CountingAttack(attacks.load("pgd", norm="l2", eps=budgets[0], steps=5))
    counting.calls = []
    rows = evaluate(ladder_cell, metrics.load("l2"), data(), counting)
    assert len(rows) == 24 * 3
    by = {(r["sample_id"], r["eps"]): r["score"] for r in rows}
    ids = sorted({r["sample_id"] for r in rows})
    assert all(by[(i, 0.5)] >= by[(i, 2.0)] >= by[(i, 8.0)] for i in ids)  # monotone by construction
    attacked = {eps: set(sum((s for e, s in counting.calls if e == eps), [])) for eps in budgets}
    worst = {r["sample_id"]: min(r["judge"], 1 - r["judge"]) for r in rows}
    assert attacked[0.5] == set(ids)
    for small, large in zip(budgets, budgets[1:]):  # exactly the samples not yet at their worst are attacked
        assert attacked[large] == {i for i in ids if by[(i, small)] > worst[i]}
    assert len(attacked[8.0]) < len(ids)  # some samples did flip on the way
    for eps in budgets:  # each budget alone (same attack, same seed) scores no lower than the ladder
        alone = evaluate(cell(kind="attack", attack="pgd", attack_name="pgd", threat="ref", norm="l2",
                              budgets=(eps,)), metrics.load("l2"), data(),
                         attacks.load("pgd", norm="l2", eps=eps, steps=5))
        assert all(by[(r["sample_id"], eps)] <= r["score"] + 1e-12 for r in alone)


def test_a_smoothing_certified_cell_certifies_a_metric_without_certificate(cache_dir):
    c = cell(kind="certified", attack="smoothing", attack_name="smoothing", threat="ref", norm="l2",
             attack_options={"sigma": 0.25, "n0": 10, "n": 50, "alpha": 0.01}, budgets=(0.1, 1.0), limit=6)
    rows = evaluate(c, metrics.load("ssim"), datasets.load("synthetic-2afc", split="test", limit=6, **OPTIONS))
    assert sorted({r["eps"] for r in rows}) == [0.0, 0.1, 1.0] and len(rows) == 18
    assert all(r["passes"] == 10 + 50 + 2 for r in rows)  # n0 + n noisy references and the two candidates
    by = {(r["sample_id"], r["eps"]): r for r in rows}
    for (sample, eps), r in by.items():  # certified scores fall with ε; a radius at or below ε scores the worst
        assert r["score"] <= by[(sample, 0.0)]["score"] + 1e-12
        if r["radius"] <= eps:
            assert r["score"] == pytest.approx(min(r["judge"], 1 - r["judge"]))
    assert validate_rows(rows).height == 18


def test_smoothing_options_are_checked_in_the_config():
    from suite.config import parse_config

    base = {"metrics": [{"name": "l2"}], "datasets": [{"name": "synthetic-2afc"}]}
    config = parse_config({**base, "evaluations": [{"kind": "certified", "eps": [0.5],
                                                      "options": {"method": "smoothing", "sigma": 0.25}}]})
    ev = config.evaluations[0]
    assert ev.attack == "smoothing" and ev.options == {"sigma": 0.25, "n0": 100, "n": 100_000, "alpha": 0.001,
                                                       "chunk": 256}
    with pytest.raises(SuiteError, match="needs options.sigma"):
        parse_config({**base, "evaluations": [{"kind": "certified", "eps": [0.5], "options": {"method": "smoothing"}}]})
    with pytest.raises(SuiteError, match="options.method must be one of lipschitz, smoothing"):
        parse_config({**base, "evaluations": [{"kind": "certified", "eps": [0.5], "options": {"method": "rs"}}]})
