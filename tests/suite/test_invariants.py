import polars as pl

from suite.invariants import check_invariants, worst_case_rows


def rows(kind, scores, attack="", threat="", norm="", eps=0.0, cell="c"):
    return pl.DataFrame({
        "metric": "m", "metric_id": "id", "dataset": "d", "split": "s", "kind": kind, "attack": attack,
        "threat": threat, "norm": norm, "eps": eps, "sample_id": [f"s{i}" for i in range(len(scores))],
        "score": scores, "cell": cell,
    })


def test_worst_case_takes_the_per_sample_minimum():
    a = rows("attack", [1.0, 0.0, 0.5], "pgd", "ref", "l2", 0.5)
    b = rows("attack", [0.0, 1.0, 0.5], "mia", "ref", "l2", 0.5)
    w = worst_case_rows([a, b]).sort("sample_id")
    assert w["score"].to_list() == [0.0, 0.0, 0.5]
    assert set(w["kind"]) == {"worst"} and set(w["attack"]) == {"mia+pgd"}


def test_worst_case_seconds_add_up_over_the_group():
    a = rows("attack", [1.0, 0.0], "pgd", "ref", "l2", 0.5).with_columns(seconds=pl.lit(0.25))
    b = rows("attack", [0.0, 1.0], "mia", "ref", "l2", 0.5).with_columns(seconds=pl.lit(0.5))
    w = worst_case_rows([a, b]).sort("sample_id")
    assert w["seconds"].to_list() == [0.75, 0.75] and w.columns == a.columns


def test_consistent_results_pass():
    frame = pl.concat([
        rows("natural", [1.0, 1.0]),
        rows("worst", [1.0, 0.0], "pgd", "ref", "l2", 0.5),
        rows("certified", [1.0, 0.0], "", "ref", "l2", 0.5),
    ])
    assert check_invariants(frame) == []


def test_certified_above_robust_is_reported_with_cell_and_samples():
    frame = pl.concat([
        rows("natural", [1.0, 1.0]),
        rows("attack", [1.0, 0.0], "pgd", "ref", "l2", 0.5, cell="attackcell"),
        rows("certified", [1.0, 1.0], "", "ref", "l2", 0.5, cell="certcell"),
    ])
    problems = check_invariants(frame)
    assert len(problems) == 1
    assert "s1" in problems[0] and "certcell" in problems[0] and "attackcell" in problems[0]


def test_attack_above_natural_is_reported():
    frame = pl.concat([rows("natural", [0.0, 1.0]), rows("attack", [1.0, 1.0], "pgd", "ref", "linf", 0.1)])
    assert len(check_invariants(frame)) == 1


def test_a_certified_radius_above_the_minimal_adversarial_radius_is_a_violation():
    import polars as pl

    from suite.schema import ROW_SCHEMA

    def row(kind, sample, radius, eps=0.5, norm="l2"):
        return {"metric": "m", "metric_id": "i", "dataset": "d", "split": "s", "kind": kind, "attack": "minnorm"
                if kind == "minnorm" else "", "threat": "ref", "norm": norm, "eps": eps, "sample_id": sample,
                "judge": 0.9, "d0": None, "d1": None, "score": None, "radius": radius, "reached": None,
                "bound": None, "seconds": 0.0, "suite_version": "0", "cell": kind}

    ok = [row("certified", "a", 0.3), row("certified", "b", 0.2), row("minnorm", "a", 0.3), row("minnorm", "b", 0.9),
          row("minnorm", "c", float("inf"))]
    assert check_invariants(pl.DataFrame(ok, schema=ROW_SCHEMA)) == []
    bad = ok + [row("certified", "c", 0.4), row("certified", "d", 0.5), row("minnorm", "d", 0.25)]
    problems = check_invariants(pl.DataFrame(bad, schema=ROW_SCHEMA))
    assert len(problems) == 1 and "certified radius above the minimal adversarial radius" in problems[0]
    assert "1 sample(s) (d)" in problems[0]


def test_a_distance_beyond_its_bound_is_a_violation_but_round_off_is_not():
    from suite.schema import ROW_SCHEMA

    def row(sample, reached, bound):
        return {"metric": "psnr", "metric_id": "i", "dataset": "d", "split": "s", "kind": "distance",
                "attack": "distance", "threat": "ref", "norm": "l2", "eps": 0.5, "sample_id": sample, "judge": 0.9,
                "d0": None, "d1": None, "score": None, "radius": None, "reached": reached, "bound": bound,
                "seconds": 0.0, "suite_version": "0", "cell": "c"}

    fine = [row("a", -53.0 + 1.5e-5, -53.0), row("b", 0.2, 0.5), row("c", 0.9, None)]  # round-off, below, no bound
    assert check_invariants(pl.DataFrame(fine, schema=ROW_SCHEMA)) == []
    problems = check_invariants(pl.DataFrame(fine + [row("d", 0.6, 0.5)], schema=ROW_SCHEMA))
    assert len(problems) == 1 and "beyond the certified bound" in problems[0] and "(d)" in problems[0]


def test_a_sample_the_metric_already_gets_wrong_has_minimal_radius_zero_and_breaks_nothing():
    from suite.schema import ROW_SCHEMA

    def row(kind, radius):
        return {"metric": "m", "metric_id": "i", "dataset": "d", "split": "s", "kind": kind,
                "attack": "minnorm" if kind == "minnorm" else "", "threat": "ref", "norm": "l2", "eps": 0.5,
                "sample_id": "a", "judge": 0.6, "d0": None, "d1": None, "score": None, "radius": radius,
                "reached": None, "bound": None, "seconds": 0.0, "suite_version": "0", "cell": kind}

    # the certificate says the (wrong) decision stays; there was nothing for the attack to flip
    assert check_invariants(pl.DataFrame([row("certified", 0.3), row("minnorm", 0.0)], schema=ROW_SCHEMA)) == []


def test_exact_and_center_smoothing_bounds_are_told_apart_by_bound_alpha():
    from suite.schema import ROW_SCHEMA

    def row(sample, reached, bound, alpha, cell="c"):
        return {"metric": "m", "metric_id": "i", "dataset": "d", "split": "s", "kind": "distance",
                "attack": "distance", "threat": "ref", "norm": "l2", "eps": 0.5, "sample_id": sample, "judge": 0.9,
                "d0": None, "d1": None, "score": None, "radius": None, "reached": reached, "bound": bound,
                "bound_alpha": alpha, "seconds": 0.0, "suite_version": "0", "cell": cell}

    def frame(rows):
        return pl.DataFrame(rows, schema=ROW_SCHEMA)

    # exact bounds (Lipschitz: 0, or null in rows written before the column): one excess is a violation
    for alpha in (0.0, None):
        problems = check_invariants(frame([row("a", 0.6, 0.5, alpha), row("b", 0.1, 0.5, alpha)]))
        assert len(problems) == 1 and "beyond the certified bound" in problems[0]
    # a center-smoothing bound holds with probability 1 − α per row: a few excesses are expected
    some = [row(f"s{i}", 0.6 if i < 2 else 0.1, 0.5, 0.01) for i in range(100)]
    assert check_invariants(frame(some)) == []
    # ... an improbable count per cell is not (P(Binomial(100, 0.01) ≥ 12) < 1e-6)
    many = [row(f"s{i}", 0.6 if i < 12 else 0.1, 0.5, 0.01) for i in range(100)]
    problems = check_invariants(frame(many))
    assert len(problems) == 1 and "center-smoothing bound in 12 of 100 rows" in problems[0]
    # counted per cell: one excess in each of ten cells of 10 rows is plausible in each (P ≈ 0.096)
    spread = [row(f"s{i}", 0.6 if i % 10 < 1 else 0.1, 0.5, 0.01, cell=f"c{i // 10}") for i in range(100)]
    assert check_invariants(frame(spread)) == []
    # rows without a reached value (the smoothed embedding abstained at the attacked point) are not counted
    assert check_invariants(frame([row(f"s{i}", None, 0.5, 0.01) for i in range(20)])) == []
