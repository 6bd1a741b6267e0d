"""Sampling loops of randomized smoothing: certify a metric's 2AFC decisions, bound its smoothed distances.

The statistics (counts → decision, probability bound, radius; distances → center and
bound) are pure functions in :mod:`suite.smoothing`, with their proofs; this module
only draws Gaussian noise, runs the metric through its contract
(:class:`suite.types.MetricContract`) and counts.

- :func:`certify_smoothed`: CERTIFY of Cohen, Rosenfeld & Kolter (ICML 2019) on the
  2AFC decision of each triplet, for threat ``ref`` (noise on the reference; the
  candidates are reduced once with ``represent``) or ``all`` (noise on the three
  images jointly). Returns a :class:`SmoothedResult`.
- :func:`center_smoothing_bound`: center smoothing of Kumar & Goldstein (NeurIPS 2021)
  of an embedding metric's ``represent``, with a bound on the distance between the
  smoothed embeddings of ``x`` and ``x + δ``. Returns a :class:`CenterSmoothingResult`.
  :func:`smoothed_center` runs only its center step (the smoothed embedding ``f̂(x')``
  of another image, e.g. an attacked one), :func:`center_distance` measures between
  centers, :func:`detect_output` tells which output distance a metric's own distance is.

Noise is never clamped to ``[0, 1]`` (see :mod:`suite.smoothing`). Both functions are
deterministic given ``seed`` and ``chunk``: each triplet (each image) draws its noise
from its own generator, seeded from ``seed`` and its ``sample_id`` (its index), so a
triplet's certificate does not depend on the batch it came in.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from suite import smoothing, validate
from suite.errors import SuiteError
from suite.scoring import oriented
from suite.types import THREATS, MetricContract, Triplets

Progress = Callable[[int, int], None]
#: center smoothing's output distances: the metric's distance as a function of the ℓ2 distance it uses
OUTPUTS = ("cosine", "euclidean")
#: defaults of center smoothing's options (:func:`center_smoothing_bound`; ``sigma`` has none)
CENTER_DEFAULTS = {"n": 100_000, "n0": 10_000, "alpha": 0.01, "delta": 0.05, "candidates": None, "chunk": 256}


@dataclass(frozen=True)
class SmoothedResult:
    """Per-triplet outcome of :func:`certify_smoothed`; every tensor is ``(B,)`` on the CPU.

    ``decision``: int64, ``smoothing.X0`` (0, x0 closer), ``smoothing.X1`` (1, x1 closer)
    or ``smoothing.ABSTAIN`` (−1). ``p_lower``: the Clopper–Pearson lower bound on the
    probability of the guessed class. ``joint_radius``: ``σ·Φ⁻¹(p_lower)``, the ℓ2 radius
    on the noised input (the concatenation of the three images for threat ``all``).
    ``radius``: per-image ℓ2 radius, comparable with a budget ε
    (``joint_radius/√3`` for ``all``, see :func:`suite.smoothing.per_image_radius`);
    0 when abstaining. ``guess``: the candidate the ``n0`` selection samples picked
    (``X0`` or ``X1``, also when abstaining); ``top_count``: how many of the ``n``
    estimation samples gave it. ``forwards``: images the metric processed (noisy images, plus the two
    candidates reduced once under threat ``ref``). ``seconds``: wall time per triplet.
    """

    decision: torch.Tensor
    p_lower: torch.Tensor
    radius: torch.Tensor
    joint_radius: torch.Tensor
    guess: torch.Tensor
    top_count: torch.Tensor
    forwards: torch.Tensor
    seconds: torch.Tensor
    threat: str
    sigma: float
    n0: int
    n: int
    alpha: float

    def score(self, judge: torch.Tensor) -> torch.Tensor:
        """Natural 2AFC score of the smoothed decision (abstentions score ``min(j, 1 − j)``)."""
        return smoothing.decision_score(self.decision, judge.cpu())

    def certified_score(self, judge: torch.Tensor, eps: float) -> torch.Tensor:
        """Certified 2AFC score at per-image budget ``eps`` (:func:`suite.smoothing.smoothed_certified_score`)."""
        return smoothing.smoothed_certified_score(self.decision, self.radius, judge.cpu(), eps)


@dataclass(frozen=True)
class SmoothedCenter:
    """Per-image outcome of :func:`smoothed_center`, on the CPU: ``center`` ``(B, D)`` float64 (unit
    directions for ``cosine``), ``center_radius`` ``r̂``, ``abstained`` bool ``(B,)`` (the center failed
    its check: ``f̂`` is undefined there), ``forwards`` ``(B,)``."""

    center: torch.Tensor
    center_radius: torch.Tensor
    abstained: torch.Tensor
    forwards: torch.Tensor
    output: str


@dataclass(frozen=True)
class CenterSmoothingResult:
    """Per-image outcome of :func:`center_smoothing_bound`, on the CPU.

    ``bound``: ``(B,)`` (``(B, E)`` for a sequence of ``E`` budgets), the upper bound on
    the metric's distance between the smoothed embeddings of ``x`` and of any
    ``x + δ``, ``‖δ‖₂ ≤ ε`` (the trivial bound, 2 for ``cosine`` or ``inf``, where the
    procedure abstains or the budget is too large). ``radius``: ``R̂`` in the ℓ2 output
    distance (same shape; ``inf`` when no bound). ``center``: ``(B, D)`` float64, the
    smoothed embeddings ``f̂(x)`` (their unit directions for ``cosine``, all that
    ``1 − cos`` sees). ``center_radius``: ``r̂`` of the accepted ball. ``abstained``:
    bool ``(B,)``. ``smoothing_error``: the metric's distance from ``f̂(x)`` to the clean
    embedding. ``forwards``, ``seconds``: per image.
    """

    bound: torch.Tensor
    radius: torch.Tensor
    center: torch.Tensor
    center_radius: torch.Tensor
    abstained: torch.Tensor
    smoothing_error: torch.Tensor
    forwards: torch.Tensor
    seconds: torch.Tensor
    eps: tuple[float, ...]
    output: str
    sigma: float
    alpha: float


def sample_seed(seed: int, key: str) -> int:
    """A 63-bit seed that depends only on ``(seed, key)`` (stable across runs and machines)."""
    digest = hashlib.sha256(f"{int(seed)}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _check_common(sigma, alpha, chunk) -> tuple[float, float, int]:
    sigma = validate.number(sigma, "smoothing sigma", 0, above=True)
    alpha = validate.number(alpha, "smoothing alpha", 0, above=True)
    if alpha >= 1:
        raise SuiteError(f"smoothing alpha must be in (0, 1); got {alpha!r}")
    return sigma, alpha, validate.integer(chunk, "smoothing chunk", 1)


def _expand(r: torch.Tensor, size: int) -> torch.Tensor:
    return r.expand(size, *r.shape[1:])


def _outcome_counts(metric: MetricContract, triplet: Triplets, reps, threat: str, sigma: float, m: int,
                    chunk: int, gen: torch.Generator, tick: Callable[[int], None]) -> torch.Tensor:
    """``[#X0, #X1, #TIE]`` of the base decision over ``m`` noisy copies of one triplet, ``chunk`` per forward."""
    counts = torch.zeros(3, dtype=torch.int64)
    ref = triplet.ref
    for start in range(0, m, chunk):
        size = min(chunk, m - start)
        if threat == "ref":
            noise = torch.randn((size, *ref.shape[1:]), generator=gen, device=ref.device, dtype=ref.dtype)
            d0, d1 = metric.distances_to(ref + sigma * noise, _expand(reps[0], size), _expand(reps[1], size))
        else:
            noise = torch.randn((3, size, *ref.shape[1:]), generator=gen, device=ref.device, dtype=ref.dtype)
            d0, d1 = metric.pair_distances(ref + sigma * noise[0], triplet.x0 + sigma * noise[1],
                                           triplet.x1 + sigma * noise[2])
        counts += smoothing.outcome_counts(*oriented(d0, d1, metric.lower_is_better)).cpu()
        tick(size)
    return counts


@torch.no_grad()
def certify_smoothed(metric: MetricContract, batch: Triplets, *, threat: str = "ref", sigma: float,
                     n0: int = 100, n: int = 100_000, alpha: float = 0.001, seed: int = 0, chunk: int = 256,
                     progress: Progress | None = None) -> SmoothedResult:
    """CERTIFY (Cohen et al. 2019) of the smoothed 2AFC decision of every triplet of ``batch``.

    Per triplet: draw ``n0`` noisy copies and take the candidate chosen more often as the
    guess ``c_A`` (:func:`suite.smoothing.select_class`); draw ``n`` fresh copies and
    count ``c_A``; :func:`suite.smoothing.certify_counts` turns the count into the
    decision (or an abstention), ``p_lower`` and the radius. With probability at least
    ``1 − alpha`` per triplet, a non-abstained decision is the smoothed decision and
    holds for every perturbation of ℓ2 norm below the radius.

    Args:
        metric: any metric obeying the contract; distances are oriented with
            :func:`suite.scoring.oriented`.
        batch: the clean triplets (images on the device the metric runs on).
        threat: ``"ref"``: noise ``N(0, σ²I)`` on the reference only; the candidates are
            reduced once (``metric.represent``) and each noisy reference is compared
            with them (``metric.distances_to``). ``"all"``: independent noise on the
            three images (``metric.pair_distances``); the radius on their
            concatenation is divided by √3 to give the per-image ``radius``.
        sigma: noise standard deviation, in ``[0, 1]`` pixel units.
        n0, n: selection and estimation samples (defaults 100 and 100,000, as the paper).
        alpha: failure probability of each certificate (default 0.001, as the paper).
        seed: noise seed; triplet ``i`` uses ``sample_seed(seed, sample_id[i])``.
        chunk: noisy copies per forward call (``3·chunk`` images for ``all``).
        progress: ``progress(done, total)`` after each forward call, in noisy copies.

    Returns:
        :class:`SmoothedResult` (CPU tensors ``(B,)``).
    """
    threat = validate.choice(threat, THREATS, "smoothing threat")
    sigma, alpha, chunk = _check_common(sigma, alpha, chunk)
    n0 = validate.integer(n0, "smoothing n0", 1)
    n = validate.integer(n, "smoothing n", 1)
    total, done = len(batch) * (n0 + n), 0

    def tick(size: int) -> None:
        nonlocal done
        done += size
        if progress:
            progress(done, total)

    top, k, forwards, seconds = [], [], [], []
    for i in range(len(batch)):
        start = time.perf_counter()
        one = batch.subset(torch.tensor([i]))
        gen = _generator(one.ref.device, sample_seed(seed, one.sample_id[0]))
        reps = (metric.represent(one.x0), metric.represent(one.x1)) if threat == "ref" else None
        guess = smoothing.select_class(_outcome_counts(metric, one, reps, threat, sigma, n0, chunk, gen, tick))
        counts = _outcome_counts(metric, one, reps, threat, sigma, n, chunk, gen, tick)
        top.append(guess)
        k.append(counts[guess])
        forwards.append(n0 + n + 2 if threat == "ref" else 3 * (n0 + n))
        seconds.append(time.perf_counter() - start)
    top_t = torch.stack(top) if top else torch.zeros(0, dtype=torch.int64)
    k_t = torch.stack(k) if k else torch.zeros(0, dtype=torch.int64)
    decision, p_lower, joint = smoothing.certify_counts(top_t, k_t, n, alpha, sigma)
    return SmoothedResult(
        decision=decision, p_lower=p_lower, joint_radius=joint,
        radius=smoothing.per_image_radius(joint, smoothing.IMAGES_PER_THREAT[threat]),
        guess=top_t, top_count=k_t, forwards=torch.tensor(forwards, dtype=torch.int64),
        seconds=torch.tensor(seconds, dtype=torch.float64),
        threat=threat, sigma=sigma, n0=n0, n=n, alpha=alpha,
    )


# --------------------------------------------------------------------------- center smoothing


def _to_output(e: torch.Tensor, output: str) -> torch.Tensor:
    """Points whose Euclidean distance is the output distance: unit directions for ``cosine``."""
    e = e.flatten(1).to(torch.float64)
    if output == "cosine":
        norm = e.norm(dim=1, keepdim=True)
        return torch.where(norm > 0, e / norm.clamp_min(1e-300), torch.zeros_like(e))
    return e


def _in_metric_units(chordal_or_l2, output: str) -> torch.Tensor:
    value = torch.as_tensor(chordal_or_l2, dtype=torch.float64)
    return smoothing.cosine_from_chordal(value) if output == "cosine" else value


def _noisy_outputs(metric, x: torch.Tensor, sigma: float, m: int, chunk: int, gen, output: str, tick):
    """Output-space points of ``m`` noisy copies of the image ``x`` ``(1, 3, H, W)``: ``(m, D)`` float64."""
    out = []
    for start in range(0, m, chunk):
        size = min(chunk, m - start)
        noise = torch.randn((size, *x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype)
        out.append(_to_output(metric.represent(x + sigma * noise), output))
        tick(size)
    return torch.cat(out)


def _distances_to(metric, x: torch.Tensor, center: torch.Tensor, sigma: float, m: int, chunk: int, gen,
                  output: str, tick) -> torch.Tensor:
    """Output distances from ``center`` to ``m`` noisy copies of ``x``: ``(m,)``, streamed ``chunk`` at a time
    (with ``n = 100,000`` the embeddings themselves would not fit; their distances do)."""
    out = []
    for start in range(0, m, chunk):
        size = min(chunk, m - start)
        out.append((_noisy_outputs(metric, x, sigma, size, size, gen, output, tick) - center[None]).norm(dim=1))
    return torch.cat(out)


def _center(candidates: torch.Tensor, samples: torch.Tensor, chunk: int) -> tuple[int, float]:
    """:func:`suite.smoothing.meb_center` over all candidates, ``chunk`` rows of distances at a time."""
    best_i, best_r = 0, math.inf
    for start in range(0, candidates.shape[0], chunk):
        i, r = smoothing.meb_center(torch.cdist(candidates[start:start + chunk], samples))
        if r < best_r:
            best_i, best_r = start + i, r
    return best_i, best_r


def _check_output(metric, x: torch.Tensor, center: torch.Tensor, output: str) -> float:
    """The metric's own ``d(x, f̂(x))`` (``distance_to``), checked against the output distance's conversion."""
    clean = _to_output(metric.represent(x), output)
    expected = float(_in_metric_units((clean - center[None]).norm(dim=1), output)[0])
    # for 1 − cos the center's direction stands for the embedding (cos ignores the length)
    got = float(metric.distance_to(x, center[None].to(device=x.device, dtype=x.dtype)).flatten()[0])
    if not math.isclose(got, expected, rel_tol=1e-3, abs_tol=1e-4):
        raise SuiteError(f"center smoothing with output={output!r} expects metric {metric.name!r} to measure "
                         f"{'1 − cos between' if output == 'cosine' else 'the ℓ2 distance between'} embeddings; "
                         f"its distance_to gave {got:.6g} where that is {expected:.6g}: pass the output that "
                         f"matches the metric ({', '.join(OUTPUTS)})")
    return got


def check_center_options(*, sigma, n=CENTER_DEFAULTS["n"], n0=CENTER_DEFAULTS["n0"],
                         alpha=CENTER_DEFAULTS["alpha"], delta=CENTER_DEFAULTS["delta"],
                         candidates=CENTER_DEFAULTS["candidates"], chunk=CENTER_DEFAULTS["chunk"]) -> dict:
    """Center smoothing's options checked and completed with :data:`CENTER_DEFAULTS` (``candidates`` only
    when given); every problem is a one-line :class:`SuiteError`. The same checks as
    :func:`center_smoothing_bound`, so a config is refused before anything runs."""
    sigma, alpha, chunk = _check_common(sigma, alpha, chunk)
    n0 = validate.integer(n0, "center smoothing n0", 1)
    n = validate.integer(n, "center smoothing n", 1)
    delta = validate.number(delta, "center smoothing delta", 0, above=True)
    if delta >= 0.5:
        raise SuiteError(f"center smoothing delta must be in (0, ½); got {delta!r}")
    m = validate.optional_integer(candidates, "center smoothing candidates", 1)
    _alphas(n0, alpha, delta, m)
    out = {"sigma": sigma, "n": n, "n0": n0, "alpha": alpha, "delta": delta, "chunk": chunk}
    return out if m is None else {**out, "candidates": m}


def _alphas(n0: int, alpha: float, delta: float, m: int | None) -> tuple[float, float]:
    """``(α₁, α₂)``: ``alpha`` less the candidates' miss probability ``(½ − Δ)^m``, halved. Refuses
    too few candidates and an ``n0`` too small for ``delta`` (``Δ₁ > Δ``), saying which ``n0`` suffices."""
    extra = (0.5 - delta) ** m if m else 0.0
    if extra >= alpha:
        raise SuiteError(f"center smoothing: {m} candidates miss with probability up to {extra:.3g} ≥ alpha "
                         f"= {alpha:g}; use more candidates or none (all samples)")
    alpha1 = alpha2 = (alpha - extra) / 2
    delta1 = smoothing.hoeffding_slack(n0, alpha1 / 2)
    if delta1 > delta:
        need = math.ceil(math.log(2 / alpha1) / (2 * delta * delta))
        raise SuiteError(f"center smoothing: n0 = {n0} gives Δ₁ = {delta1:.3g} > delta = {delta:g}; "
                         f"use n0 ≥ {need} or a larger delta")
    return alpha1, alpha2


def _check_embedding(metric) -> None:
    if not getattr(metric, "has_embed", False):
        raise SuiteError(f"center smoothing smooths an embedding; metric {metric.name!r} has none "
                         "(its represent is the image itself)")


def _seed_keys(keys: Sequence[str] | None, count: int) -> list[str]:
    """The key each image's noise generator is seeded from: ``keys`` (e.g. sample ids), else the index."""
    if keys is None:
        return [str(i) for i in range(count)]
    if len(keys) != count:
        raise SuiteError(f"center smoothing: {len(keys)} seed keys for {count} images")
    return [str(k) for k in keys]


def _center_step(metric, xi: torch.Tensor, gen, *, sigma: float, n0: int, m: int | None, chunk: int,
                 output: str, delta: float, alpha1: float, tick) -> tuple[torch.Tensor, float, bool]:
    """Steps 1–2 of :func:`center_smoothing_bound` on one image ``(1, 3, H, W)``: ``(ẑ, r̂, accepted)``."""
    samples = _noisy_outputs(metric, xi, sigma, n0, chunk, gen, output, tick)
    cands = samples if m is None else _noisy_outputs(metric, xi, sigma, m, chunk, gen, output, tick)
    j, r_hat = _center(cands, samples, chunk)
    center = cands[j]
    check = _noisy_outputs(metric, xi, sigma, n0, chunk, gen, output, tick)
    inside = int(((check - center[None]).norm(dim=1) <= r_hat).sum())
    return center, r_hat, smoothing.center_check(inside, n0, delta, alpha1)


def center_distance(a: torch.Tensor, b: torch.Tensor, output: str) -> torch.Tensor:
    """The metric's distance between output-space points ``(B, D)`` row by row (centers of
    :func:`center_smoothing_bound` / :func:`smoothed_center`): ``1 − cos = ‖â − b̂‖²/2`` for
    ``cosine`` (the centers are unit directions), ``‖a − b‖`` for ``euclidean``; float64 ``(B,)``."""
    output = validate.choice(output, OUTPUTS, "center smoothing output")
    if output == "cosine":
        return smoothing.cosine_from_chordal(smoothing.chordal_distance(a, b))
    return (a.to(torch.float64) - b.to(torch.float64)).flatten(1).norm(dim=1)


@torch.no_grad()
def detect_output(metric: MetricContract, x: torch.Tensor, y: torch.Tensor) -> str:
    """Which of :data:`OUTPUTS` the metric's own distance is, from image pairs ``(x[i], y[i])``.

    ``metric.distance_to(x, represent(y))`` is compared with ``1 − cos`` and with the ℓ2
    distance of the embeddings (the tolerances of the check in :func:`center_smoothing_bound`);
    exactly one must match on every pair. Pairs of distinct images tell them apart (``x = y``
    gives 0 for both). One-line :class:`SuiteError` when neither matches (PSNR: a log of the
    ℓ2 distance, no distance at all in the triangle-inequality sense) or both do.
    """
    _check_embedding(metric)
    ex, ey = metric.represent(x), metric.represent(y)
    got = metric.distance_to(x, ey).flatten().to(torch.float64).cpu()
    found = []
    for output in OUTPUTS:
        expected = center_distance(_to_output(ex, output), _to_output(ey, output), output).cpu()
        if torch.isclose(got, expected, rtol=1e-3, atol=1e-4).all():
            found.append(output)
    if len(found) == 1:
        return found[0]
    if not found:
        raise SuiteError(f"center smoothing needs a metric whose distance is 1 − cos or the ℓ2 distance of its "
                         f"embeddings; metric {metric.name!r} measures neither")
    raise SuiteError(f"center smoothing cannot tell whether metric {metric.name!r} measures 1 − cos or the ℓ2 "
                     f"distance on these images; set options.output to one of {', '.join(OUTPUTS)}")


@torch.no_grad()
def smoothed_center(metric: MetricContract, x: torch.Tensor, *, sigma: float, n0: int = CENTER_DEFAULTS["n0"],
                    alpha: float = CENTER_DEFAULTS["alpha"], delta: float = CENTER_DEFAULTS["delta"],
                    output: str = "cosine", candidates: int | None = None, seed: int = 0,
                    chunk: int = CENTER_DEFAULTS["chunk"], keys: Sequence[str] | None = None,
                    progress: Progress | None = None) -> SmoothedCenter:
    """The smoothed embedding ``f̂(x)`` of each image: steps 1–2 of :func:`center_smoothing_bound`
    (``n0`` samples for the center, ``candidates`` more if given, ``n0`` for its check) and nothing else.

    This is "run the same procedure at ``x'``" in the proof of :func:`suite.smoothing.center_bound`:
    with the same ``sigma``, ``n0``, ``alpha``, ``delta`` and ``candidates`` as the bound at ``x``
    and independent noise (another ``seed`` or other ``keys``), an accepted center at
    ``x' = x + δ``, ``‖δ‖₂ ≤ ε``, lies within that bound of ``f̂(x)`` except with probability
    ``alpha`` (the bound's own failure included), provided ``x'`` does not depend on the noise
    of either run. Image ``i`` draws from ``sample_seed(seed, keys[i])`` (``keys`` default: the index).
    """
    _check_embedding(metric)
    output = validate.choice(output, OUTPUTS, "center smoothing output")
    checked = check_center_options(sigma=sigma, n0=n0, alpha=alpha, delta=delta, candidates=candidates, chunk=chunk)
    sigma, n0, alpha, delta, chunk = (checked[k] for k in ("sigma", "n0", "alpha", "delta", "chunk"))
    m = checked.get("candidates")
    alpha1, _ = _alphas(n0, alpha, delta, m)
    names = _seed_keys(keys, x.shape[0])
    per_image = n0 + (m or 0) + n0
    total, done = x.shape[0] * per_image, 0

    def tick(size: int) -> None:
        nonlocal done
        done += size
        if progress:
            progress(done, total)

    centers, radii, abstained = [], [], []
    for i in range(x.shape[0]):
        gen = _generator(x.device, sample_seed(seed, names[i]))
        center, r_hat, accepted = _center_step(metric, x[i:i + 1], gen, sigma=sigma, n0=n0, m=m, chunk=chunk,
                                               output=output, delta=delta, alpha1=alpha1, tick=tick)
        centers.append(center.cpu())
        radii.append(r_hat)
        abstained.append(not accepted)
    return SmoothedCenter(
        center=torch.stack(centers) if centers else torch.zeros(0, 0, dtype=torch.float64),
        center_radius=torch.tensor(radii, dtype=torch.float64),
        abstained=torch.tensor(abstained, dtype=torch.bool),
        forwards=torch.full((x.shape[0],), per_image, dtype=torch.int64), output=output,
    )


@torch.no_grad()
def center_smoothing_bound(metric: MetricContract, x: torch.Tensor, eps: float | Sequence[float], *,
                           sigma: float, n: int = CENTER_DEFAULTS["n"], n0: int = CENTER_DEFAULTS["n0"],
                           alpha: float = CENTER_DEFAULTS["alpha"], delta: float = CENTER_DEFAULTS["delta"],
                           output: str = "cosine", candidates: int | None = CENTER_DEFAULTS["candidates"],
                           seed: int = 0, chunk: int = CENTER_DEFAULTS["chunk"], keys: Sequence[str] | None = None,
                           progress: Progress | None = None) -> CenterSmoothingResult:
    """Center smoothing (Kumar & Goldstein 2021) of ``metric.represent`` with a bound on the smoothed distance.

    The smoothed embedding ``f̂(x)`` is the center of an approximate minimum enclosing
    ball of half the mass of ``f(x + N)``, ``N ~ N(0, σ²I)``; the result bounds
    ``d(f̂(x), f̂(x + δ))`` for ``‖δ‖₂ ≤ ε``, with probability at least ``1 − alpha``
    per image and budget. It is a statement about the *smoothed* embedding, not the
    metric's ``distance_bound`` of the base embedding.

    Procedure per image (proofs in :mod:`suite.smoothing`):

    1. ``n0`` noisy embeddings; the center ``ẑ`` is the candidate with the smallest
       lower median distance to them, ``r̂`` that median (:func:`~suite.smoothing.meb_center`,
       β = 2). Candidates are the ``n0`` samples themselves (``candidates=None``, their
       β-MEB; ``n0²`` distances) or ``candidates`` separate noisy embeddings (their
       variant for large outputs; it adds ``(½ − Δ)^m`` to the failure probability).
    2. ``n0`` fresh samples; accept when :func:`~suite.smoothing.center_check` holds,
       else abstain.
    3. ``n`` fresh samples; ``R̂`` is their :func:`~suite.smoothing.order_statistic`
       of the distances to ``ẑ`` at level :func:`~suite.smoothing.center_quantile_level`;
       the bound is ``(1 + β)·R̂ = 3R̂`` (:func:`~suite.smoothing.center_bound`).

    The output distance must satisfy the triangle inequality. ``output="cosine"`` (LipSim
    and every ``1 − cos`` metric) works with the chordal distance ``‖â − b̂‖`` of the
    directions and converts the bound to ``1 − cos = ‖â − b̂‖²/2``
    (:func:`~suite.smoothing.cosine_from_chordal`); ``"euclidean"`` uses ``‖a − b‖``
    (the ``l2`` metric). The metric's own ``distance_to`` is checked against the choice.

    ``alpha`` is split as ``α₁ = α₂ = (alpha − (½ − Δ)^m)/2``; ``delta`` is Δ and must be
    at least ``Δ₁ = √(ln(2/α₁)/(2·n0))`` (an error says which ``n0`` suffices).
    ``eps`` may be a sequence (one column per budget, from the same samples; each
    column holds with probability ``1 − alpha`` on its own). Seeds: image ``i`` uses
    ``sample_seed(seed, keys[i])`` (``keys`` default: ``str(i)``, its index).
    """
    _check_embedding(metric)
    output = validate.choice(output, OUTPUTS, "center smoothing output")
    checked = check_center_options(sigma=sigma, n=n, n0=n0, alpha=alpha, delta=delta, candidates=candidates,
                                   chunk=chunk)
    sigma, n, n0, alpha, delta, chunk = (checked[k] for k in ("sigma", "n", "n0", "alpha", "delta", "chunk"))
    m = checked.get("candidates")
    single = not isinstance(eps, Sequence)
    budgets = tuple(validate.number(e, "center smoothing eps", 0) for e in ([eps] if single else eps))
    alpha1, alpha2 = _alphas(n0, alpha, delta, m)
    names = _seed_keys(keys, x.shape[0])
    levels = [smoothing.center_quantile_level(e, sigma, delta, n, alpha2) for e in budgets]
    trivial = 2.0 if output == "cosine" else math.inf
    per_image = n0 + (m or 0) + n0 + n
    total, done = x.shape[0] * per_image, 0

    def tick(size: int) -> None:
        nonlocal done
        done += size
        if progress:
            progress(done, total)

    rows = {key: [] for key in ("bound", "radius", "center", "center_radius", "abstained", "error", "seconds")}
    for i in range(x.shape[0]):
        start = time.perf_counter()
        xi = x[i:i + 1]
        gen = _generator(x.device, sample_seed(seed, names[i]))
        center, r_hat, accepted = _center_step(metric, xi, gen, sigma=sigma, n0=n0, m=m, chunk=chunk,
                                               output=output, delta=delta, alpha1=alpha1, tick=tick)
        dists = _distances_to(metric, xi, center, sigma, n, chunk, gen, output, tick)
        radii = [smoothing.order_statistic(dists, q) if accepted else math.inf for q in levels]
        bounds = [float(_in_metric_units(smoothing.center_bound(r), output)) if math.isfinite(r) else trivial
                  for r in radii]
        rows["bound"].append(bounds)
        rows["radius"].append(radii)
        rows["center"].append(center.cpu())
        rows["center_radius"].append(r_hat)
        rows["abstained"].append(not accepted)
        rows["error"].append(_check_output(metric, xi, center, output))
        rows["seconds"].append(time.perf_counter() - start)
    bound = torch.tensor(rows["bound"], dtype=torch.float64).reshape(x.shape[0], len(budgets))
    radius = torch.tensor(rows["radius"], dtype=torch.float64).reshape(x.shape[0], len(budgets))
    return CenterSmoothingResult(
        bound=bound[:, 0] if single else bound, radius=radius[:, 0] if single else radius,
        center=torch.stack(rows["center"]) if rows["center"] else torch.zeros(0, 0, dtype=torch.float64),
        center_radius=torch.tensor(rows["center_radius"], dtype=torch.float64),
        abstained=torch.tensor(rows["abstained"], dtype=torch.bool),
        smoothing_error=torch.tensor(rows["error"], dtype=torch.float64),
        forwards=torch.full((x.shape[0],), per_image + 2, dtype=torch.int64),
        seconds=torch.tensor(rows["seconds"], dtype=torch.float64),
        eps=budgets, output=output, sigma=sigma, alpha=alpha,
    )


__all__ = ["CENTER_DEFAULTS", "CenterSmoothingResult", "OUTPUTS", "SmoothedCenter", "SmoothedResult",
           "center_distance", "center_smoothing_bound", "certify_smoothed", "check_center_options", "detect_output",
           "sample_seed", "smoothed_center"]
