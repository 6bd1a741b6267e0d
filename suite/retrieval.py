"""Copy detection as retrieval: query–gallery distances, rank-1 decisions and the retrieval scores.

Setting. A gallery of ``G`` originals is reduced once by a metric
(:class:`suite.types.Gallery`: ``reps = metric.represent(gallery images)``). A batch of
``B`` queries (:class:`suite.types.Queries`) carries, per query, the gallery indices of
its true originals (``matches``; empty for a distractor query). Every function here
works on the ``(B, G)`` matrix ``D`` of *oriented* distances (lower = closer, the
convention of :func:`suite.scoring.oriented`) and is pure.

Conventions, fixed once for the whole suite:

- **Rank 1.** A query is *correct* when its nearest true original is strictly closer
  than every other gallery item: ``d_true < d_other``. A tie is a miss (the
  adversary's best), as in the 2AFC score where a tie never counts as the right answer.
- **Ranking** (for AP). Gallery items sorted by increasing distance, ties in gallery
  order (a stable sort): deterministic, independent of the batch.
- **No positives.** A query without a true original has no AP (NaN; left out of the
  mean) and counts as a wrong top-1 prediction in the micro-AP (as a distractor query
  does in DISC21).

Nothing here imports from above ``suite/``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import torch

from suite.errors import SuiteError
from suite.scoring import oriented
from suite.types import Gallery

#: elements of the expanded ``(rows·G, D)`` embedding pairs compared in one call of ``metric.compare``
_COMPARE_BUDGET = 1 << 24
#: gallery items a query is compared with in one call of ``metric.distance_to`` (metrics without ``embed``)
_GALLERY_CHUNK = 256


def query_distances(metric, images: torch.Tensor, gallery: Gallery) -> torch.Tensor:
    """``D[b, k] = d(query_b, gallery_k)``, ``(B, G)``, oriented so that lower = closer.

    ``D = oriented(d)``: ``d`` itself when ``metric.lower_is_better``, ``−d`` for a
    similarity (:func:`suite.scoring.oriented`). Differentiable w.r.t. ``images`` when
    the metric is.

    - ``metric.has_embed``: the queries are embedded once, ``e_b = metric.embed(q_b)``,
      and ``D[b, k] = metric.compare(e_b, reps_k)`` against the stored embeddings
      ``gallery.reps`` (no gallery item is embedded again). Pairs are compared in
      chunks of whole query rows, so no query's row depends on the others.
    - otherwise: ``D[b, k] = metric.distance_to(q_b, reps_k)`` with ``q_b`` expanded
      over the gallery (in chunks of ``_GALLERY_CHUNK`` items), one query at a time;
      ``reps`` are then whatever ``metric.represent`` gave (the images themselves for a
      plain :class:`metrics.base.Metric`).
    """
    reps = gallery.reps
    n_gallery = int(reps.shape[0])
    n_query = int(images.shape[0])
    if n_gallery != len(gallery):
        raise SuiteError(f"gallery has {len(gallery)} ids but {n_gallery} representations")
    if n_gallery == 0 or n_query == 0:
        return images.new_zeros((n_query, n_gallery))
    if metric.has_embed:
        emb = metric.embed(images)
        feat = tuple(emb.shape[1:])
        width = max(1, math.prod(feat))
        step = max(1, _COMPARE_BUDGET // (n_gallery * width))
        rows = []
        for start in range(0, n_query, step):
            e = emb[start:start + step]
            n = e.shape[0]
            left = e.unsqueeze(1).expand(n, n_gallery, *feat).reshape(n * n_gallery, *feat)
            right = reps.unsqueeze(0).expand(n, *reps.shape).reshape(n * n_gallery, *reps.shape[1:])
            rows.append(metric.compare(left, right).reshape(n, n_gallery))
        d = torch.cat(rows)
    else:
        out = []
        for b in range(n_query):
            q = images[b:b + 1]
            parts = []
            for start in range(0, n_gallery, _GALLERY_CHUNK):
                r = reps[start:start + _GALLERY_CHUNK]
                parts.append(metric.distance_to(q.expand(r.shape[0], *q.shape[1:]), r))
            out.append(torch.cat(parts))
        d = torch.stack(out)
    return oriented(d, d, metric.lower_is_better)[0]


def match_mask(matches: Sequence[Sequence[int]], gallery_size: int,
               device: torch.device | str | None = None) -> torch.Tensor:
    """``M[b, k] = 1[k ∈ matches_b]``, ``(B, G)`` bool; an index outside ``[0, G)`` is a SuiteError."""
    mask = torch.zeros((len(matches), int(gallery_size)), dtype=torch.bool)
    for b, row in enumerate(matches):
        for k in row:
            k = int(k)
            if not 0 <= k < gallery_size:
                raise SuiteError(f"query {b}: match {k} is not a gallery index (gallery of {gallery_size})")
            mask[b, k] = True
    return mask if device is None else mask.to(device)


def _as_mask(matches, distances: torch.Tensor) -> torch.Tensor:
    if torch.is_tensor(matches) and matches.dtype == torch.bool:
        if matches.shape != distances.shape:
            raise SuiteError(f"match mask {tuple(matches.shape)} does not fit distances {tuple(distances.shape)}")
        return matches.to(distances.device)
    return match_mask(matches, distances.shape[1], distances.device)


def top1(D: torch.Tensor, matches) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(d_true, d_other, correct)``, each ``(B,)``: the rank-1 decision of each query.

    ``d_true = min_{k ∈ M_b} D[b, k]`` (``+inf`` when the query has no true original),
    ``d_other = min_{k ∉ M_b} D[b, k]`` (``+inf`` when every gallery item is a match),
    ``correct = d_true < d_other``: strictly, so a tie is a miss (the adversary's best),
    and a query without a true original is never correct. ``matches`` is a list of
    index tuples (:attr:`suite.types.Queries.matches`) or a ``(B, G)`` bool mask.
    ``d_true`` and ``d_other`` keep the gradient of ``D`` (an attack's margin).
    """
    mask = _as_mask(matches, D)
    inf = torch.tensor(float("inf"), dtype=D.dtype, device=D.device)
    d_true = torch.where(mask, D, inf).amin(1) if D.shape[1] else inf.expand(D.shape[0])
    d_other = torch.where(mask, inf, D).amin(1) if D.shape[1] else inf.expand(D.shape[0])
    return d_true, d_other, d_true < d_other


def target_top1(D: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(d_target, d_rest, hit)`` for a collision: ``d_target = D[b, t_b]``,
    ``d_rest = min_{k ≠ t_b} D[b, k]`` (``+inf`` for a gallery of one), ``hit = d_target < d_rest``
    (strictly: a tie does not make the target the answer)."""
    targets = torch.as_tensor(targets, dtype=torch.long, device=D.device).reshape(-1)
    if targets.numel() != D.shape[0]:
        raise SuiteError(f"expected one target per query ({D.shape[0]}); got {targets.numel()}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= D.shape[1]):
        raise SuiteError(f"collision targets must be gallery indices in [0, {D.shape[1]}); got "
                         f"{int(targets.min())}…{int(targets.max())}")
    mask = torch.zeros_like(D, dtype=torch.bool)
    mask[torch.arange(D.shape[0], device=D.device), targets] = True
    d_target, d_rest, hit = top1(D, mask)
    return d_target, d_rest, hit


def average_precision(distances_row: torch.Tensor, matches: Sequence[int]) -> float | None:
    """Average precision of one query: the trapezoid rule of the INRIA Holidays / Copydays
    evaluation package.

    Sort the gallery by increasing distance (a stable sort: ties in gallery order) and let
    ``r_0 < r_1 < … < r_{n−1}`` be the 0-based ranks of the ``n = |matches|`` true
    originals. Between consecutive recall levels ``k/n`` and ``(k+1)/n`` the
    precision–recall curve is integrated as a trapezoid with left height
    ``k / r_k`` (``1`` when ``r_k = 0``) and right height ``(k+1)/(r_k+1)``:

        AP = Σ_k ( p⁰_k + (k+1)/(r_k+1) ) / (2n),   p⁰_k = k/r_k, or 1 if r_k = 0.

    This is ``score_ap_from_ranks_1`` of the Holidays package (H. Jégou, M. Douze),
    as copied into DINO's ``eval_copy_detection.py`` (facebookresearch/dino) and used by
    the LipSim and DINO copy-detection evaluations; here the ranks run over the whole
    gallery (DINO's script looks only at the top 20 results, where a positive ranked
    below 20 adds nothing). A query without true originals has no AP: ``None``
    (:func:`average_precisions` writes it as ``nan``; :func:`mean_average_precision`
    leaves it out).
    """
    row = distances_row.detach().reshape(-1).to(torch.float64).cpu()
    positives = sorted({int(k) for k in matches})
    if not positives:
        return None
    if positives[0] < 0 or positives[-1] >= row.numel():
        raise SuiteError(f"match indices must be in [0, {row.numel()}); got {positives}")
    order = torch.sort(row, stable=True).indices
    is_pos = torch.zeros(row.numel(), dtype=torch.bool)
    is_pos[positives] = True
    ranks = is_pos[order].nonzero().flatten().tolist()
    n = len(positives)
    ap = 0.0
    for k, r in enumerate(ranks):
        left = 1.0 if r == 0 else k / r
        right = (k + 1) / (r + 1)
        ap += (left + right) / (2 * n)
    return ap


def average_precisions(D: torch.Tensor, matches: Sequence[Sequence[int]]) -> torch.Tensor:
    """:func:`average_precision` of every row of ``D``, ``(B,)`` float64 (``nan`` for a query without originals)."""
    aps = [average_precision(D[b], matches[b]) for b in range(D.shape[0])]
    return torch.tensor([math.nan if ap is None else ap for ap in aps], dtype=torch.float64)


def mean_average_precision(D: torch.Tensor, matches: Sequence[Sequence[int]]) -> float:
    """mAP: the mean of :func:`average_precision` over the queries that have at least one
    true original (queries without one have no AP and are excluded, as in the revisited
    Oxford/Paris evaluation); ``nan`` when no query has one."""
    aps = average_precisions(D, matches)
    keep = ~torch.isnan(aps)
    return float(aps[keep].mean()) if bool(keep.any()) else float("nan")


def recall_at_1(correct: torch.Tensor, has_match: torch.Tensor | None = None) -> float:
    """Recall@1: the fraction of queries whose top-1 is a true original, ``mean(correct)``.

    ``has_match`` (optional ``(B,)`` bool) restricts the mean to the queries that have a
    true original (a distractor query can never be correct); ``nan`` for no query.
    """
    c = torch.as_tensor(correct).reshape(-1).to(torch.bool)
    if has_match is not None:
        c = c[torch.as_tensor(has_match, device=c.device).reshape(-1).to(torch.bool)]
    return float(c.double().mean()) if c.numel() else float("nan")


def micro_average_precision(confidence: torch.Tensor, correct: torch.Tensor, n_positive: int) -> float:
    """Micro-average precision (µAP) of DISC21 over pooled top-1 predictions.

    Protocol (Douze et al. 2021, "The 2021 Image Similarity Dataset and Challenge",
    arXiv:2106.09672; reference code ``isc/metrics.py`` of facebookresearch/isc2021):
    every prediction ``i`` of every query has a confidence ``c_i`` (higher = more
    sure; here each query contributes one prediction, its top-1 gallery item, with
    ``c_i = −min(d_true, d_other)``, minus its rank-1 distance, from :func:`top1`) and
    is right (``correct_i``) when it names a true original. All
    predictions are sorted by decreasing confidence, ties with the wrong ones first
    (the challenge's pessimistic rule: a constant confidence gains nothing); with
    ``tp_i`` the right ones among the first ``i``,

        P_i = tp_i / i,   R_i = tp_i / n_positive,   µAP = Σ_i (R_i − R_{i−1}) · P_i,

    i.e. the mean over the ``n_positive`` ground-truth matches of the precision at each
    right prediction (a match never predicted adds 0). ``n_positive`` is the number of
    queries that have a true original: with one prediction per query at most one
    match per query can be found, so this is the DISC21 count (one reference per
    query) and µAP ≤ 1. Queries without an original contribute wrong predictions only.
    ``nan`` when ``n_positive = 0``.
    """
    conf = torch.as_tensor(confidence).detach().reshape(-1).to(torch.float64).cpu().numpy()
    right = torch.as_tensor(correct).detach().reshape(-1).to(torch.bool).cpu().numpy()
    if conf.shape != right.shape:
        raise SuiteError(f"confidence {conf.shape} and correct {right.shape} must have one entry per prediction")
    if np.isnan(conf).any():
        raise SuiteError("micro_average_precision: a confidence is NaN")
    n_positive = int(n_positive)
    if n_positive <= 0:
        return float("nan")
    if int(right.sum()) > n_positive:
        raise SuiteError(f"{int(right.sum())} right predictions but only {n_positive} positives")
    # primary key: confidence, decreasing; among equal confidences the wrong predictions first
    order = np.lexsort((right, -conf))
    hits = right[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, hits.size + 1)
    return float(precision[hits].sum() / n_positive)


def collision_targets(matches: Sequence[Sequence[int]], gallery_size: int, sample_ids: Sequence[str],
                      seed: int) -> torch.Tensor:
    """One deterministic collision target per query: a gallery index that is none of its matches.

    ``t_b = N_b[h_b mod |N_b|]`` where ``N_b`` is the sorted list of non-matching gallery
    indices and ``h_b`` the first 8 bytes (little-endian) of
    ``sha256(f"{seed}:{sample_id}:collision")``: a function of the query's id, its matches,
    the gallery size and the seed only, so the same query gets the same target in any
    batch, shard or order. A query every gallery item matches has no possible target
    (SuiteError).
    """
    if len(matches) != len(sample_ids):
        raise SuiteError(f"{len(matches)} match lists for {len(sample_ids)} sample ids")
    out = []
    for row, sid in zip(matches, sample_ids):
        taken = {int(k) for k in row}
        count = int(gallery_size) - len({k for k in taken if 0 <= k < gallery_size})
        if count <= 0:
            raise SuiteError(f"query {sid!r}: every gallery item is a match, so no collision target exists")
        digest = hashlib.sha256(f"{int(seed)}:{sid}:collision".encode()).digest()
        pick = int.from_bytes(digest[:8], "little") % count
        # the pick-th index (0-based) not in `taken`, without listing the whole gallery
        index = pick
        for k in sorted(k for k in taken if 0 <= k < gallery_size):
            if k <= index:
                index += 1
            else:
                break
        out.append(index)
    return torch.tensor(out, dtype=torch.long)


__all__ = [
    "query_distances",
    "match_mask",
    "top1",
    "target_top1",
    "average_precision",
    "average_precisions",
    "mean_average_precision",
    "recall_at_1",
    "micro_average_precision",
    "collision_targets",
]
