"""The training objectives and learning-rate schedule of LipSim against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from metrics.lipsim.losses import (
    cosine_distance,
    distillation_loss,
    hinge_loss,
    hinge_targets,
    lr_factor,
    rmse,
    twoafc_logit,
)


def test_cosine_distance_of_hand_picked_vectors():
    a = torch.tensor([[1.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [6.0, 8.0], [-1.0, -1.0]])
    # orthogonal: 1 − 0; parallel (any scale): 1 − 1; opposite: 1 − (−1)
    assert torch.allclose(cosine_distance(a, b), torch.tensor([1.0, 0.0, 2.0]), atol=1e-6)


def test_twoafc_logit_is_d0_minus_d1():
    ref = torch.tensor([[1.0, 0.0]])
    e0 = torch.tensor([[0.0, 1.0]])  # d0 = 1
    e1 = torch.tensor([[1.0, 1.0]])  # d1 = 1 − 1/√2
    assert twoafc_logit(ref, e0, e1).item() == pytest.approx(1 - (1 - 1 / math.sqrt(2)), abs=1e-6)


def test_hinge_targets_round_the_judgement_with_ties_to_minus_one():
    judge = torch.tensor([0.0, 0.3, 0.5, 0.51, 1.0])
    assert hinge_targets(judge).tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0]


def test_hinge_loss_matches_a_hand_computation():
    logit = torch.tensor([0.3, -0.1, 0.05, -0.6])
    judge = torch.tensor([0.9, 0.8, 0.2, 0.1])  # y = +1, +1, −1, −1
    margin = 0.2
    # max(0, 0.2 − 0.3) = 0; max(0, 0.2 + 0.1) = 0.3; max(0, 0.2 + 0.05) = 0.25; max(0, 0.2 − 0.6) = 0
    expected = (0 + 0.3 + 0.25 + 0) / 4
    assert hinge_loss(logit, judge, margin).item() == pytest.approx(expected, abs=1e-7)


def test_hinge_loss_is_zero_once_every_decision_clears_the_margin_and_rejects_negative_margins():
    logit = torch.tensor([0.6, -0.7])
    judge = torch.tensor([1.0, 0.0])
    assert hinge_loss(logit, judge, 0.5).item() == 0.0
    with pytest.raises(ValueError, match="margin"):
        hinge_loss(logit, judge, -0.1)


def test_hinge_loss_gradient_pushes_the_logit_towards_the_human_choice():
    logit = torch.tensor([0.0, 0.0], requires_grad=True)
    hinge_loss(logit, torch.tensor([0.9, 0.1]), 0.5).backward()
    # d/dlogit of mean(max(0, m − y·logit)) = −y/B inside the margin
    assert logit.grad.tolist() == pytest.approx([-0.5, 0.5])


def test_rmse_matches_a_hand_computation():
    p = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    # squared errors 0, 4, 9, 0 → mean 13/4
    assert rmse(p, t).item() == pytest.approx(math.sqrt(13 / 4), rel=1e-6)


def test_rmse_has_a_finite_gradient_at_a_perfect_fit():
    t = torch.tensor([[0.5, -0.5]])
    p = t.clone().requires_grad_()
    rmse(p, t).backward()
    assert torch.isfinite(p.grad).all()


def test_distillation_loss_averages_the_plain_and_the_jittered_view():
    t = torch.zeros(2, 3)
    plain = torch.full((2, 3), 1.0)  # RMSE 1
    jittered = torch.full((2, 3), 3.0)  # RMSE 3
    assert distillation_loss(plain, jittered, t).item() == pytest.approx(2.0, rel=1e-6)


def test_lr_factor_warms_up_linearly_then_follows_a_cosine():
    total, warmup = 110, 10
    assert [lr_factor(s, total, warmup) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_factor(10, total, warmup) == pytest.approx(1.0)
    assert lr_factor(60, total, warmup) == pytest.approx(0.5)  # halfway through the decay: ½(1 + cos(π/2))
    assert lr_factor(35, total, warmup) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(110, total, warmup) == pytest.approx(0.0, abs=1e-12)


def test_lr_factor_step_decay_and_constant():
    assert [lr_factor(s, 100, 0, "step") for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    assert lr_factor(99, 100, 0, "constant") == 1.0
    with pytest.raises(ValueError, match="decay"):
        lr_factor(0, 10, 0, "linear")
