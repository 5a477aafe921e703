"""Reward accuracy, margins, the DPO gradient weight and the KL proxy."""

from __future__ import annotations

import math

import pytest
import torch
from losses_helpers import pair, random_pairs

from prefalign.losses import (
    dpo_gradient_weight,
    dpo_loss,
    kl_proxy,
    reward_accuracy,
    reward_margins,
    reward_metrics,
)


def test_accuracy_and_margins_hand_computed():
    """chosen [1, 0, 2], rejected [0, 0, 3]: wins 1 > 0 only (the tie counts as wrong) → 1/3
    margins [1, 0, −1], mean 0"""
    chosen, rejected = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0])
    assert reward_accuracy(chosen, rejected).item() == pytest.approx(1 / 3)
    torch.testing.assert_close(reward_margins(chosen, rejected), torch.tensor([1.0, 0.0, -1.0]))


def test_dpo_gradient_weight_hand_computed():
    """Pair 0: h = 2, β = 0.5 → σ(−1) = 0.2689414. Pair 1: h = 0 → σ(0) = 0.5."""
    weight = dpo_gradient_weight(
        pair([-5.0, -1.0], [-7.0, -2.0]), pair([-6.0, -1.0], [-6.0, -2.0]), beta=0.5
    )
    torch.testing.assert_close(weight, torch.tensor([1 / (1 + math.e), 0.5], dtype=torch.float64))


@pytest.mark.parametrize("length_normalized", [False, True])
def test_dpo_gradient_weight_is_the_weight_in_dpo_gradient(length_normalized):
    """∂L_DPO/∂log π(y_w) = −β·σ(−β·h)/n_w, and σ(−β·h) = σ(r_l − r_w) from the rewards."""
    beta = 0.3
    policy, reference = random_pairs(6, seed=60, grad=True)
    out = dpo_loss(policy, reference, beta=beta, length_normalized=length_normalized)
    (grad_chosen,) = torch.autograd.grad(out.losses.sum(), [policy.chosen])
    weight = dpo_gradient_weight(policy, reference, beta=beta, length_normalized=length_normalized)
    scale = policy.chosen_count.double() if length_normalized else 1.0
    torch.testing.assert_close(-grad_chosen * scale / beta, weight)
    torch.testing.assert_close(weight, torch.sigmoid(out.rejected_rewards - out.chosen_rewards))
    assert not weight.requires_grad


def test_kl_proxy_hand_computed():
    """log-ratios: chosen [−1 − (−2), −3 − (−3)] = [1, 0]; rejected [−5 − (−4), −2 − (−4)] = [−1, 2]
    mean of [1, 0, −1, 2] = 0.5"""
    proxy = kl_proxy(pair([-1.0, -3.0], [-5.0, -2.0]), pair([-2.0, -3.0], [-4.0, -4.0]))
    assert proxy.item() == pytest.approx(0.5)


def test_reward_metrics_summarise_a_loss_output():
    """Rewards β·ratio with β = 0.5: chosen [0.5, 0], rejected [−0.5, 0.5]
    accuracy 1/2, margins [1, −0.5] → mean 0.25, chosen mean 0.25, rejected mean 0"""
    out = dpo_loss(pair([-5.0, -2.0], [-7.0, -1.0]), pair([-6.0, -2.0], [-6.0, -2.0]), beta=0.5)
    metrics = {key: value.item() for key, value in reward_metrics(out).items()}
    assert metrics == pytest.approx(
        {
            "rewards/accuracy": 0.5,
            "rewards/margin": 0.25,
            "rewards/chosen": 0.25,
            "rewards/rejected": 0.0,
        }
    )


def test_gradient_weight_rejects_bad_beta():
    policy, reference = random_pairs(2, seed=61)
    with pytest.raises(
        ValueError, match=r"dpo_gradient_weight: beta must be a finite number in \(0.0, inf\)"
    ):
        dpo_gradient_weight(policy, reference, beta=0.0)
