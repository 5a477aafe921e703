"""APO-zero and APO-down: values, behaviour at the reference, gradients."""

from __future__ import annotations

import pytest
import torch
from losses_helpers import as_lists, gradcheck_policy, pair, random_pairs, sigmoid

from prefalign.losses import apo_down_loss, apo_zero_loss


def test_apo_zero_hand_computed():
    """chosen ratio −5 − (−7) = 2, rejected ratio −9 − (−7) = −2; β = 0.5 → r_w = 1, r_l = −1
    L = 1 − σ(1) + σ(−1) = 1 − 0.7310586 + 0.2689414 = 0.5378828
    """
    out = apo_zero_loss(pair([-5.0], [-9.0]), pair([-7.0], [-7.0]), beta=0.5)
    assert out.losses.item() == pytest.approx(0.5378828427, abs=1e-9)


def test_apo_down_hand_computed():
    """Same pair: L = σ(r_w) + 1 − σ(r_w − r_l) = σ(1) + 1 − σ(2) = 0.7310586 + 1 − 0.8807971 = 0.8502615"""
    out = apo_down_loss(pair([-5.0], [-9.0]), pair([-7.0], [-7.0]), beta=0.5)
    assert out.losses.item() == pytest.approx(0.8502615007, abs=1e-9)


def test_apo_at_the_reference():
    """π = π_ref (all r = 0): both losses are 1. σ'(0) = 1/4, so
    APO-zero: ∂L/∂chosen = −β/4, ∂L/∂rejected = +β/4 (raise chosen, lower rejected);
    APO-down: ∂L/∂chosen = β/4 − β/4 = 0, ∂L/∂rejected = +β/4 (lower rejected only)."""
    beta = 0.4
    policy, _ = random_pairs(4, seed=40, grad=True)
    reference = pair(policy.chosen.tolist(), policy.rejected.tolist())
    zero = apo_zero_loss(policy, reference, beta=beta)
    down = apo_down_loss(policy, reference, beta=beta)
    torch.testing.assert_close(zero.losses, torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(down.losses, torch.ones(4, dtype=torch.float64))
    params = [policy.chosen, policy.rejected]
    zero_chosen, zero_rejected = torch.autograd.grad(zero.losses.sum(), params)
    down_chosen, down_rejected = torch.autograd.grad(down.losses.sum(), params)
    quarter = torch.full((4,), beta / 4, dtype=torch.float64)
    torch.testing.assert_close(zero_chosen, -quarter)
    torch.testing.assert_close(zero_rejected, quarter)
    torch.testing.assert_close(down_chosen, torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(down_rejected, quarter)


def test_apo_down_pushes_chosen_down_once_the_margin_is_won():
    """r_w = 0.5·2 = 1, margin 0.5·(2 + 10) = 6: ∂L/∂chosen = β[σ'(1) − σ'(6)] > 0."""
    policy = pair([-5.0], [-17.0], grad=True)
    out = apo_down_loss(policy, pair([-7.0], [-7.0]), beta=0.5)
    grad_chosen, grad_rejected = torch.autograd.grad(
        out.losses.sum(), [policy.chosen, policy.rejected]
    )
    s1, s6 = sigmoid(1.0), sigmoid(6.0)
    assert grad_chosen.item() == pytest.approx(0.5 * (s1 * (1 - s1) - s6 * (1 - s6)))
    assert grad_chosen.item() > 0 and grad_rejected.item() > 0


@pytest.mark.parametrize("loss", [apo_zero_loss, apo_down_loss])
def test_apo_gradcheck(loss):
    policy, reference = random_pairs(5, seed=41, grad=True)
    gradcheck_policy(lambda p: loss(p, reference, beta=0.3).losses, policy)


def test_apo_match_plain_python():
    policy, reference = random_pairs(8, seed=42)
    zero = apo_zero_loss(policy, reference, beta=0.3).losses
    down = apo_down_loss(policy, reference, beta=0.3).losses
    for i, ((pw, pl, _, _), (rw, rl, _, _)) in enumerate(
        zip(as_lists(policy), as_lists(reference), strict=True)
    ):
        r_w, r_l = 0.3 * (pw - rw), 0.3 * (pl - rl)
        assert zero[i].item() == pytest.approx(1 - sigmoid(r_w) + sigmoid(r_l), rel=1e-12)
        assert down[i].item() == pytest.approx(sigmoid(r_w) + 1 - sigmoid(r_w - r_l), rel=1e-12)
