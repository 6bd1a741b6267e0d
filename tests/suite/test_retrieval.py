"""Copy-detection retrieval math (suite.retrieval) and the certified rank-1 match (suite.certify.match_radius).

Expected numbers are computed by hand in the comments. The certificate is checked against
the 2AFC radius it is built from (a loop over distractors), on an exact 2-D example and on
near-duplicate gallery items; that it resists a real attack is in
tests/attacks/test_retrieval_attacks.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import metrics
from metrics.base import EmbeddingMetric, Metric
from suite import certify, retrieval
from suite.errors import SuiteError
from suite.types import Gallery

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------- rank 1 and recall


def test_top1_and_recall_on_a_hand_made_matrix():
    inf = math.inf
    D = torch.tensor([
        [0.1, 0.5, 0.3],   # match 0 nearest: correct
        [0.4, 0.2, 0.2],   # match 1 ties with non-match 2: a miss
        [0.3, 0.3, 0.9],   # matches 1 and 2, non-match 0 at 0.3 ties match 1: a miss
        [0.6, 0.2, 0.1],   # matches 1 and 2: nearest true original is 2 (0.1) < 0.6: correct
        [0.2, 0.1, 0.4],   # no match: never correct
        [0.5, 0.7, 0.9],   # every item matches: d_other = inf, correct
    ])
    matches = [(0,), (1,), (1, 2), (1, 2), (), (0, 1, 2)]
    d_true, d_other, correct = retrieval.top1(D, matches)
    assert d_true.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.1, inf, 0.5])
    assert d_other.tolist() == pytest.approx([0.3, 0.2, 0.3, 0.6, 0.1, inf])
    assert correct.tolist() == [True, False, False, True, False, True]
    # the same from a bool mask
    mask = retrieval.match_mask(matches, 3)
    assert retrieval.top1(D, mask)[2].tolist() == correct.tolist()
    assert retrieval.recall_at_1(correct) == pytest.approx(3 / 6)
    has_match = torch.tensor([bool(m) for m in matches])
    assert retrieval.recall_at_1(correct, has_match) == pytest.approx(3 / 5)
    assert math.isnan(retrieval.recall_at_1(torch.zeros(0, dtype=torch.bool)))


def test_top1_keeps_the_gradient_and_refuses_bad_indices():
    D = torch.tensor([[0.3, 0.1, 0.2]], requires_grad=True)
    d_true, d_other, _ = retrieval.top1(D, [(0,)])
    (d_true - d_other).sum().backward()
    assert D.grad.tolist() == [[1.0, -1.0, 0.0]]
    with pytest.raises(SuiteError, match="not a gallery index"):
        retrieval.top1(D.detach(), [(3,)])


def test_target_top1_is_strict():
    D = torch.tensor([[0.1, 0.2, 0.3], [0.2, 0.2, 0.5], [0.4, 0.3, 0.1]])
    d_t, d_rest, hit = retrieval.target_top1(D, torch.tensor([0, 1, 2]))
    assert d_t.tolist() == pytest.approx([0.1, 0.2, 0.1])
    assert d_rest.tolist() == pytest.approx([0.2, 0.2, 0.3])
    assert hit.tolist() == [True, False, True]  # a tie does not name the target
    with pytest.raises(SuiteError, match="gallery indices"):
        retrieval.target_top1(D, torch.tensor([0, 1, 3]))


# ---------------------------------------------------------------------------- average precision


@pytest.mark.parametrize("row,positives,expected", [
    # ranks (0, 2): k=0: (1 + 1/1)/2 · ½ = ½;  k=1: (1/2 + 2/3)/2 · ½ = 7/24;  AP = 19/24
    ([0.1, 0.5, 0.3, 0.9], (0, 1), 19 / 24),
    # rank 0 alone: (1 + 1)/2 = 1
    ([0.1, 0.5, 0.3, 0.9], (0,), 1.0),
    # rank 3 alone: (0/3 + 1/4)/2 = 1/8 (the Holidays trapezoid halves the plain 1/(r+1))
    ([0.1, 0.5, 0.3, 0.9], (3,), 1 / 8),
    # ranks (1, 2): (0 + 1/2)/4 + (1/2 + 2/3)/4 = 1/8 + 7/24 = 5/12
    ([0.1, 0.5, 0.3, 0.9], (2, 1), 5 / 12),
    # every item a positive, ranks 0..3: each trapezoid has both heights 1: AP = 1
    ([0.1, 0.5, 0.3, 0.9], (0, 1, 2, 3), 1.0),
    # ties in gallery order: order (2, 0, 1), the positive 1 is at rank 2: (0 + 1/3)/2 = 1/6
    ([0.5, 0.5, 0.1], (1,), 1 / 6),
    # ... and the positive 0 at rank 1: (0 + 1/2)/2 = 1/4
    ([0.5, 0.5, 0.1], (0,), 1 / 4),
])
def test_average_precision_matches_the_holidays_trapezoid(row, positives, expected):
    assert retrieval.average_precision(torch.tensor(row), positives) == pytest.approx(expected, abs=1e-12)


def test_mean_average_precision_leaves_out_queries_without_positives():
    D = torch.tensor([[0.1, 0.5, 0.3, 0.9], [0.1, 0.5, 0.3, 0.9], [0.2, 0.1, 0.3, 0.4]])
    matches = [(0, 1), (3,), ()]
    aps = retrieval.average_precisions(D, matches)
    assert aps[:2].tolist() == pytest.approx([19 / 24, 1 / 8])
    assert math.isnan(aps[2])
    assert retrieval.mean_average_precision(D, matches) == pytest.approx((19 / 24 + 1 / 8) / 2)
    assert math.isnan(retrieval.mean_average_precision(D[2:], [()]))
    assert retrieval.average_precision(D[2], ()) is None


def test_micro_average_precision_hand_cases():
    # sorted by confidence: right, wrong, right, wrong; precisions 1, 1/2, 2/3, 2/4; 3 positives
    # µAP = (1 + 2/3) / 3 = 5/9 (the third positive is never predicted right)
    conf = torch.tensor([0.7, 0.9, 0.6, 0.8])
    right = torch.tensor([True, True, False, False])
    assert retrieval.micro_average_precision(conf, right, 3) == pytest.approx(5 / 9)
    # ties: the wrong prediction goes first whatever the input order, P = 1/2 at the right one
    for c, r in [([0.9, 0.9], [True, False]), ([0.9, 0.9], [False, True])]:
        assert retrieval.micro_average_precision(torch.tensor(c), torch.tensor(r), 1) == pytest.approx(0.5)
    assert retrieval.micro_average_precision(torch.tensor([1.0, 0.5]), torch.tensor([True, True]), 2) == 1.0
    assert math.isnan(retrieval.micro_average_precision(torch.tensor([1.0]), torch.tensor([False]), 0))
    # numpy inputs (the leaderboard pools stored rows) give the same number
    assert retrieval.micro_average_precision(-np.array([0.3, 0.1, 0.2, 0.4]), np.array([True, True, False, False]),
                                             3) == pytest.approx(5 / 9)


def test_micro_average_precision_from_top1_confidences():
    D = torch.tensor([[0.1, 0.5], [0.4, 0.3], [0.2, 0.6]])
    matches = [(0,), (0,), ()]
    d_true, d_other, correct = retrieval.top1(D, matches)
    confidence = -torch.minimum(d_true, d_other)  # minus the rank-1 distance: 0.1 (right), 0.3, 0.2 (wrong)
    # order: 0.1 right (P=1), 0.2 wrong, 0.3 wrong; 2 queries with an original: µAP = 1/2
    assert retrieval.micro_average_precision(confidence, correct, 2) == pytest.approx(0.5)


# ---------------------------------------------------------------------------- collision targets


def test_collision_targets_are_deterministic_non_matches_independent_of_the_batch():
    matches = [(0,), (1, 2), (), (3, 4, 5, 6)]
    ids = ["a", "b", "c", "d"]
    t = retrieval.collision_targets(matches, 8, ids, seed=0)
    assert t.dtype == torch.long and t.shape == (4,)
    for k, row in zip(t.tolist(), matches):
        assert 0 <= k < 8 and k not in row
    # the same query alone, or in another order, gets the same target
    for i in range(4):
        assert retrieval.collision_targets([matches[i]], 8, [ids[i]], seed=0).item() == t[i].item()
    assert retrieval.collision_targets(matches[::-1], 8, ids[::-1], seed=0).tolist() == t.tolist()[::-1]
    # other seeds spread over the non-matches
    many = {retrieval.collision_targets([(0, 1)], 4, ["q"], seed=s).item() for s in range(40)}
    assert many == {2, 3}
    with pytest.raises(SuiteError, match="no collision target"):
        retrieval.collision_targets([(0, 1)], 2, ["q"], seed=0)


# ---------------------------------------------------------------------------- query distances


class Similarity(EmbeddingMetric):
    """A similarity (higher = closer): −‖x − y‖₂ over pixels."""

    lower_is_better = False

    def embed(self, x):
        return x.flatten(1)

    def compare(self, ex, ey):
        return -(ex - ey).norm(dim=1)


class PlainL1(Metric):
    """A metric without ``embed``: the gallery reps are the images."""

    def distance(self, x, y):
        return (x - y).abs().flatten(1).mean(1)


def _images(n, seed, size=12):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _pairwise(metric, q, g):
    return torch.stack([torch.stack([metric.distance(q[i:i + 1], g[k:k + 1])[0] for k in range(len(g))])
                        for i in range(len(q))])


@pytest.mark.parametrize("name", ["l2", "ssim", "plain", "similarity"])
def test_query_distances_agree_with_pairwise_distances(name, monkeypatch):
    metric = {"plain": PlainL1(), "similarity": Similarity()}.get(name) or metrics.load(name)
    q, g = _images(3, 0), _images(5, 1)
    gallery = Gallery([f"g{k}" for k in range(5)], metric.represent(g))
    expected = _pairwise(metric, q, g)
    if not metric.lower_is_better:
        expected = -expected
    D = retrieval.query_distances(metric, q, gallery)
    assert D.shape == (3, 5)
    torch.testing.assert_close(D, expected, rtol=1e-5, atol=1e-6)
    # chunked (one query row per compare call, two gallery items per distance_to call): the same numbers
    monkeypatch.setattr(retrieval, "_COMPARE_BUDGET", 1)
    monkeypatch.setattr(retrieval, "_GALLERY_CHUNK", 2)
    torch.testing.assert_close(retrieval.query_distances(metric, q, gallery), D, rtol=1e-6, atol=1e-7)


def test_query_distances_embed_the_queries_once_and_carry_the_gradient():
    metric = metrics.load("l2")
    calls = []
    original = metric.embed
    metric.embed = lambda x: (calls.append(x.shape[0]), original(x))[1]
    g = _images(4, 1)
    gallery = Gallery(list("abcd"), original(g))
    q = _images(3, 0).requires_grad_()
    D = retrieval.query_distances(metric, q, gallery)
    assert calls == [3]
    D.sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- the certified match


def _loop_reference(fq, fg, matches):
    """min over non-matches of certify.ref_radius(f(q), g*, g_k), g* the nearest true original (cosine)."""
    out = []
    for b in range(fq.shape[0]):
        cos = torch.nn.functional.cosine_similarity(fq[b:b + 1].double(), fg.double(), dim=1)
        star = max(matches[b], key=lambda m: cos[m].item())
        others = [k for k in range(fg.shape[0]) if k not in matches[b]]
        radii = certify.ref_radius(fq[b:b + 1].expand(len(others), -1), fg[star].expand(len(others), -1),
                                   fg[others])
        out.append(radii.min().item())
    return torch.tensor(out, dtype=torch.float64)


def test_match_radius_is_the_smallest_2afc_radius_over_distractors():
    g = torch.Generator().manual_seed(0)
    fg = torch.randn(9, 6, generator=g)
    fg[8] = 3.0 * fg[1]  # a duplicate direction of gallery item 1 (a non-match for query 1)
    matches = [(0,), (1,), (2, 5), (3, 4), (6,), (7,), (0, 7), (2,)]
    fq = torch.stack([fg[m[0]] for m in matches]) + 0.3 * torch.randn(8, 6, generator=g)
    D = 1 - torch.nn.functional.cosine_similarity(fq.unsqueeze(1).double(), fg.unsqueeze(0).double(), dim=2)
    correct = retrieval.top1(D, matches)[2]
    radius = certify.match_radius(fq, fg, matches)
    assert radius.dtype == torch.float64 and radius.shape == (8,)
    reference = _loop_reference(fq, fg, matches)
    assert bool(correct[[0, 2, 3, 4, 5]].all())  # the example has certified queries ...
    torch.testing.assert_close(radius[correct], reference[correct], rtol=1e-9, atol=1e-12)
    assert bool((radius[correct] > 0).all())
    assert (radius[~correct] == 0).all()  # ... nothing to certify where the top-1 is wrong
    assert radius[1].item() == 0  # gallery item 8 has the direction of query 1's original: a tie for ever
    # L and eta: R = (margin − 2η)/L
    scaled = certify.match_radius(fq, fg, matches, lipschitz=2.0, eta=0.01)
    expected = ((reference - 0.02) / 2).clamp_min(0)
    torch.testing.assert_close(scaled[correct], expected[correct], rtol=1e-9, atol=1e-12)


def test_match_radius_edge_cases():
    fg = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    fq = torch.tensor([[1.0, 0.2], [1.0, 0.2], [0.1, 1.0]])
    # no true original: 0; every item an original: inf; wrong top-1: 0
    radius = certify.match_radius(fq, fg, [(), (0, 1), (0,)])
    assert radius.tolist() == [0.0, math.inf, 0.0]


def test_match_radius_is_exact_on_a_2d_example():
    # f(q) = (1, 0.2), true original g* = (1, 0), distractor (0, 1): u = (1, −1), ⟨f(q), u⟩ = 0.8,
    # R = 0.8/√2; the point f(q) − R·û = (0.6, 0.6) is a tie (a miss), a hair inside is correct
    fq = torch.tensor([[1.0, 0.2]], dtype=torch.float64)
    fg = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    R = certify.match_radius(fq, fg, [(0,)]).item()
    assert R == pytest.approx(0.8 / math.sqrt(2), rel=1e-14)
    u_hat = torch.tensor([[1.0, -1.0]], dtype=torch.float64) / math.sqrt(2)

    def correct_at(step):
        z = fq - step * u_hat
        D = 1 - torch.nn.functional.cosine_similarity(z.unsqueeze(1), fg.unsqueeze(0), dim=2)
        return bool(retrieval.top1(D, [(0,)])[2])

    assert correct_at(R * (1 - 1e-9))
    assert not correct_at(R * (1 + 1e-9))


def test_match_radius_near_duplicates_keep_their_digits():
    # a distractor 1e-7 (in direction) from the true original: the Gram expansion would lose every digit
    g = torch.Generator().manual_seed(3)
    base = torch.randn(1, 16, generator=g, dtype=torch.float64)
    twist = torch.randn(1, 16, generator=g, dtype=torch.float64)
    fg = torch.cat([base, base + 1e-7 * twist, torch.randn(3, 16, generator=g, dtype=torch.float64)])
    fq = base + 0.05 * torch.randn(4, 16, generator=g, dtype=torch.float64)
    matches = [(0,)] * 4
    radius = certify.match_radius(fq, fg, matches)
    reference = _loop_reference(fq, fg, matches)
    D = 1 - torch.nn.functional.cosine_similarity(fq.unsqueeze(1), fg.unsqueeze(0), dim=2)
    correct = retrieval.top1(D, matches)[2]
    assert bool(correct.any())
    torch.testing.assert_close(radius[correct], reference[correct], rtol=1e-6, atol=1e-12)
