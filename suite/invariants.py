"""Worst case over an attack group, and the per-sample invariants of DESIGN.md.

Per sample, always: certified ≤ worst-case robust ≤ natural, and certified radius ≤
minimal adversarial radius (ℓ2). A violation means a broken certificate or a broken
attack; it is reported naming the cells and samples, never averaged away.

Distance rows: ``reached ≤ bound`` per sample where the bound is exact (the metric's
Lipschitz certificate, ``bound_alpha`` 0 or null). A center-smoothing bound
(``bound_alpha`` = α > 0, suite/schema.py) holds per sample only with probability
``1 − α``, so it is checked per cell as a count (:func:`improbable_excess`).
"""

from __future__ import annotations

import polars as pl

TOL = 1e-9
#: slack for "certified radius ≤ minimal adversarial radius": the attack's flip is judged in float32
RADIUS_RTOL, RADIUS_ATOL = 1e-5, 1e-6
#: slack for "distance reached ≤ certified bound" (``distance`` rows): both sides are float32
#: computations, so only ``reached > bound + BOUND_RTOL·|bound| + BOUND_ATOL`` is an excess
#: (:func:`exceeds_bound` is the one definition of a real excess: the leaderboard's "over the
#: bound" and any check of distance rows use it)
BOUND_RTOL, BOUND_ATOL = 1e-5, 1e-6
#: a cell's count of excesses over probabilistic (center-smoothing) bounds is a violation when a
#: count that large has probability below this if every bound held with its stated 1 − α
EXCESS_LEVEL = 1e-6


def exceeds_bound(reached: str = "reached", bound: str = "bound") -> pl.Expr:
    """Rows whose ``reached`` distance exceeds the certified ``bound`` by more than float round-off
    (:data:`BOUND_RTOL`, :data:`BOUND_ATOL`); false where there is no bound."""
    slack = pl.col(bound).abs() * BOUND_RTOL + BOUND_ATOL
    return (pl.col(reached) > pl.col(bound) + slack).fill_null(False)


def probabilistic_bound() -> pl.Expr:
    """Rows whose ``bound`` holds only with probability ``1 − bound_alpha`` (center smoothing)."""
    return (pl.col("bound_alpha") > 0).fill_null(False)


def improbable_excess(excesses: int, rows: int, alpha: float, level: float = EXCESS_LEVEL) -> tuple[bool, float]:
    """``(violation, p)``: whether ``excesses`` of ``rows`` bounds that each fail with probability at most
    ``alpha`` is too many, and ``p = P(Binomial(rows, alpha) ≥ excesses)``.

    Why a count. A center-smoothing bound holds per row with probability at least
    ``1 − α``, so one excess is no proof of a bug: at α = 0.01 a cell of 1000 rows expects
    about 10. Each row's failure is an event of its own noise (every sample draws from its
    own generator, seeded by its sample id, and the attack's point never sees that noise),
    so the excesses of one cell are independent events of probability at most α each and
    their count is stochastically below ``Binomial(rows, α)``: if every bound is right,
    ``P(count ≥ k) ≤ binom.sf(k − 1, rows, α) = p``. A count with ``p < level`` (1e-6)
    therefore means, beyond reasonable doubt, a broken bound or attack; over ``C`` cells the
    false alarm rate is at most ``C·level``. No excess is never a violation.
    """
    if excesses <= 0:
        return False, 1.0
    from scipy.stats import binom

    p = float(binom.sf(excesses - 1, rows, min(max(alpha, 0.0), 1.0)))
    return p < level, p


def worst_case_rows(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Per sample and ε, the row with the lowest score over the attacks of one group.

    All frames share (metric, dataset, split, threat, norm); each may hold several ε.
    The result has ``kind = "worst"`` and ``attack`` = the attack labels present at
    that ε joined by ``+``. Ties keep the first attack in label order, so the result is
    deterministic; ``seconds`` is the sum over the group's attacks at that ε (what the
    worst case cost).
    """
    rows = pl.concat(frames, how="vertical_relaxed")
    labels = (rows.group_by("eps").agg(pl.col("attack").unique().sort().str.join("+").alias("_label")))
    worst = (
        rows.sort(["eps", "sample_id", "score", "attack"])
        .group_by(["eps", "sample_id"], maintain_order=True)
        .first()
        .join(labels, on="eps", how="left")
        .with_columns(kind=pl.lit("worst"), attack=pl.col("_label"))
        .drop("_label")
    )
    if "seconds" in rows.columns:  # the worst case cost every attack of the group
        spent = rows.group_by(["eps", "sample_id"]).agg(pl.col("seconds").sum())
        worst = worst.drop("seconds").join(spent, on=["eps", "sample_id"], how="left")
    return worst.select(rows.columns)


def _describe(frame: pl.DataFrame, what: str, limit: int = 5) -> str:
    ids = frame["sample_id"].to_list()
    cells = sorted(set(frame["cell"].to_list())) if "cell" in frame.columns else []
    head = frame.row(0, named=True)
    where = f"{head['metric']} {head['dataset']}/{head['split']}"
    extra = f" threat={head.get('threat')} {head.get('norm')} ε={head.get('eps'):g}" if head.get("norm") else ""
    return (f"{what} on {where}{extra}: {len(ids)} sample(s) ({', '.join(ids[:limit])}"
            f"{', …' if len(ids) > limit else ''}) in cell(s) {', '.join(cells[:3])}")


def _smoothed_bound_problems(rows: pl.DataFrame) -> list[str]:
    """Cells whose excesses over center-smoothing bounds are improbable (:func:`improbable_excess`); rows
    without a ``reached`` (the smoothed embedding abstained at the attack's point) or a bound are not counted."""
    problems = []
    counted = rows.filter(pl.col("reached").is_not_null() & pl.col("bound").is_not_null())
    for (_, alpha), group in counted.group_by(["cell", "bound_alpha"], maintain_order=True):
        over = group.filter(exceeds_bound())
        bad, p = improbable_excess(over.height, group.height, float(alpha))
        if bad:
            problems.append(_describe(over, f"distance beyond its center-smoothing bound in {over.height} of "
                                            f"{group.height} rows where α = {alpha:g} allows about "
                                            f"{group.height * alpha:.3g} (P = {p:.2g} < {EXCESS_LEVEL:g}): the "
                                            "smoothing bound or the attack is broken"))
    return problems


def check_invariants(rows: pl.DataFrame) -> list[str]:
    """Every per-sample violation of certified ≤ robust ≤ natural, of reached distance ≤ certified bound
    (beyond float round-off, :func:`exceeds_bound`; for center-smoothing bounds, which hold with probability
    1 − α each, an improbable count per cell, :func:`improbable_excess`) and of certified radius ≤ minimal
    adversarial radius, one message per offending group."""
    keys = ["metric", "metric_id", "dataset", "split", "sample_id"]
    natural = rows.filter(pl.col("kind") == "natural").select(*keys, nat=pl.col("score"))
    robust = rows.filter(pl.col("kind").is_in(["attack", "worst"]))
    # randomized smoothing certifies the smoothed decision, not the metric's own: only the metric's own
    # (Lipschitz) certificates, whose rows have no attack label, are held against its scores and attacks
    certified = rows.filter((pl.col("kind") == "certified") & (pl.col("attack") == ""))
    problems = []

    over = robust.join(natural, on=keys).filter(pl.col("score") > pl.col("nat") + TOL)
    for _, group in over.group_by(["metric", "dataset", "split", "attack", "threat", "norm", "eps"], maintain_order=True):
        problems.append(_describe(group, f"attack {group['attack'][0]!r} scored above natural"))

    cert_over_nat = certified.join(natural, on=keys).filter(pl.col("score") > pl.col("nat") + TOL)
    for _, group in cert_over_nat.group_by(["metric", "dataset", "split", "threat", "eps"], maintain_order=True):
        problems.append(_describe(group, "certified score above natural"))

    attacked = robust.filter(pl.col("norm") == "l2").select(
        *keys, "threat", "eps", robust=pl.col("score"), robust_attack=pl.col("attack"), robust_cell=pl.col("cell"))
    broken = certified.join(attacked, on=[*keys, "threat", "eps"]).filter(pl.col("score") > pl.col("robust") + TOL)
    for _, group in broken.group_by(["metric", "dataset", "split", "threat", "eps", "robust_attack"], maintain_order=True):
        problems.append(_describe(group, f"certified score above robust score of {group['robust_attack'][0]!r} "
                                         f"(cell {group['robust_cell'][0]}): a certificate or an attack is broken"))

    if {"reached", "bound"} <= set(rows.columns):
        distance = rows.filter(pl.col("kind") == "distance")
        if "bound_alpha" not in distance.columns:  # rows from before the column: every bound is exact
            distance = distance.with_columns(bound_alpha=pl.lit(None, dtype=pl.Float64))
        over = distance.filter(exceeds_bound() & ~probabilistic_bound())
        for _, group in over.group_by(["metric", "dataset", "split", "norm", "eps"], maintain_order=True):
            problems.append(_describe(group, "distance attack reached beyond the certified bound: "
                                             "a distance bound or the attack is broken"))
        problems.extend(_smoothed_bound_problems(distance.filter(probabilistic_bound())))
    if "radius" not in rows.columns:
        return problems
    radii = certified.group_by([*keys, "threat"]).agg(certified_radius=pl.col("radius").min())
    # a radius of 0 means the clean decision already sides with the minority (or j = ½): there is nothing
    # to flip, while a certificate speaks of the decision staying as it is, right or wrong
    minimal = rows.filter((pl.col("kind") == "minnorm") & (pl.col("norm") == "l2") & (pl.col("radius") > 0)).select(
        *keys, "threat", "attack", "norm", "eps", "cell", found=pl.col("radius"))
    loose = minimal.join(radii, on=[*keys, "threat"]).filter(
        pl.col("certified_radius") > pl.col("found") * (1 + RADIUS_RTOL) + RADIUS_ATOL)
    for _, group in loose.group_by(["metric", "dataset", "split", "threat", "attack"], maintain_order=True):
        problems.append(_describe(group, f"certified radius above the minimal adversarial radius found by "
                                         f"{group['attack'][0]!r}: a certificate is broken"))
    return problems
