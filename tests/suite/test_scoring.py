import pytest
import torch

from suite.scoring import adversarial_margin, certified_score, target_label, twoafc_score, worst_score

def T(values):
    return torch.tensor(values, dtype=torch.float64)


def test_score_follows_the_judges_fraction():
    # d0 < d1: metric picks x0, credited with the fraction who chose x0
    assert twoafc_score(T([0.1]), T([0.2]), T([0.3])).item() == pytest.approx(0.7)
    # d1 < d0: metric picks x1, credited with j
    assert twoafc_score(T([0.2]), T([0.1]), T([0.3])).item() == pytest.approx(0.3)


def test_exact_tie_scores_one_half_whatever_the_judges_said():
    for j in (0.0, 0.2, 1.0):
        assert twoafc_score(T([0.5]), T([0.5]), T([j])).item() == 0.5


def test_fractional_judge_cases():
    d0 = T([0.0, 1.0, 0.0, 1.0])
    d1 = T([1.0, 0.0, 1.0, 0.0])
    j = T([0.0, 1.0, 0.5, 0.8])
    assert twoafc_score(d0, d1, j).tolist() == pytest.approx([1.0, 1.0, 0.5, 0.8])


def test_worst_score_is_min_of_j_and_one_minus_j():
    assert worst_score(T([0.0, 0.3, 0.5, 0.9])).tolist() == pytest.approx([0.0, 0.3, 0.5, 0.1])


def test_certified_score_needs_radius_strictly_above_eps():
    natural, radius, j = T([1.0, 1.0, 0.8]), T([0.5, 0.2, 0.2]), T([0.0, 0.0, 0.8])
    assert certified_score(natural, radius, j, 0.2).tolist() == pytest.approx([1.0, 0.0, 0.2])


def test_certified_never_exceeds_natural_and_never_below_worst():
    g = torch.Generator().manual_seed(0)
    d0, d1, j, r = (torch.rand(200, generator=g) for _ in range(4))
    nat = twoafc_score(d0, d1, j)
    cert = certified_score(nat, r, j, 0.5)
    assert (cert <= nat + 1e-12).all() and (cert >= worst_score(j) - 1e-12).all()


def test_adversarial_margin_points_at_the_minority_option():
    j = T([0.9, 0.1, 0.5])
    assert target_label(j).tolist() == [1.0, -1.0, 0.0]
    # people chose x1 (j=0.9): the adversary gains when d1 > d0
    m = adversarial_margin(T([0.1, 0.1, 0.1]), T([0.3, 0.3, 0.3]), j)
    assert m.tolist() == pytest.approx([0.2, -0.2, 0.0])
