"""Sigmoid DPO (plain, conservative, length-normalised), robust DPO and RPO: values and properties."""

from __future__ import annotations

import math

import pytest
import torch
from losses_helpers import (
    as_lists,
    gradcheck_policy,
    neg_log_sigmoid,
    pair,
    random_pairs,
    swap,
)

from prefalign.losses import dpo_loss, robust_dpo_loss, rpo_loss

LN2 = math.log(2)


# ---- sigmoid DPO -------------------------------------------------------------------------------


def test_dpo_hand_computed():
    """policy (chosen, rejected) = (−5, −7), reference (−6, −6), β = 0.5.

    h = (−5 − (−6)) − (−7 − (−6)) = 1 − (−1) = 2; β·h = 1
    L = −log σ(1) = log(1 + e^−1) = log(1.3678794) = 0.3132617
    rewards: β·1 = 0.5 (chosen), β·(−1) = −0.5 (rejected)
    """
    out = dpo_loss(pair([-5.0], [-7.0]), pair([-6.0], [-6.0]), beta=0.5)
    assert out.losses.item() == pytest.approx(0.3132616875, abs=1e-9)
    assert out.chosen_rewards.item() == pytest.approx(0.5)
    assert out.rejected_rewards.item() == pytest.approx(-0.5)


def test_conservative_dpo_hand_computed():
    """Same pair, ε = 0.25: L = 0.75·log(1 + e^−1) + 0.25·log(1 + e^1)
    = 0.75·0.3132617 + 0.25·1.3132617 = 0.2349463 + 0.3283154 = 0.5632617
    (= ℓ(βh) + ε·βh, since log(1 + e^x) − log(1 + e^−x) = x).
    """
    out = dpo_loss(pair([-5.0], [-7.0]), pair([-6.0], [-6.0]), beta=0.5, label_smoothing=0.25)
    assert out.losses.item() == pytest.approx(0.5632616875, abs=1e-9)


def test_length_normalized_dpo_hand_computed():
    """chosen: policy −6, reference −3, 3 tokens → (−6 + 3)/3 = −1 per token
    rejected: policy −4, reference −8, 2 tokens → (−4 + 8)/2 = 2 per token
    h̄ = −1 − 2 = −3; β = 0.1 → β·h̄ = −0.3; L = log(1 + e^0.3) = log(2.3498588) = 0.8543552
    rewards per token: 0.1·(−1) = −0.1 and 0.1·2 = 0.2
    """
    policy = pair([-6.0], [-4.0], [3], [2])
    out = dpo_loss(policy, pair([-3.0], [-8.0]), beta=0.1, length_normalized=True)
    assert out.losses.item() == pytest.approx(0.8543552445, abs=1e-9)
    assert out.chosen_rewards.item() == pytest.approx(-0.1)
    assert out.rejected_rewards.item() == pytest.approx(0.2)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.4])
def test_dpo_is_ln2_at_zero_margin(label_smoothing):
    policy, reference = random_pairs(6, seed=1)
    # h = 0 whenever policy and reference agree, whatever the log-probs are
    out = dpo_loss(policy, policy, beta=0.3, label_smoothing=label_smoothing)
    torch.testing.assert_close(out.losses, torch.full((6,), LN2, dtype=torch.float64))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_dpo_swap_changes_loss_by_minus_beta_h(label_smoothing):
    """L(h) − L(−h) = −(1 − 2ε)·β·h; swapping chosen and rejected negates h."""
    beta = 0.7
    policy, reference = random_pairs(8, seed=2)
    swapped = dpo_loss(swap(policy), swap(reference), beta=beta, label_smoothing=label_smoothing)
    out = dpo_loss(policy, reference, beta=beta, label_smoothing=label_smoothing)
    h = (policy.chosen - reference.chosen) - (policy.rejected - reference.rejected)
    expected = -(1 - 2 * label_smoothing) * beta * h
    torch.testing.assert_close(out.losses - swapped.losses, expected)


@pytest.mark.parametrize("length_normalized", [False, True])
def test_dpo_gradient_raises_chosen_and_lowers_rejected(length_normalized):
    """∂L/∂log π(y_w) = −β·σ(−β·h)/n_w < 0 and ∂L/∂log π(y_l) = +β·σ(−β·h)/n_l > 0."""
    beta = 0.5
    policy, reference = random_pairs(8, seed=3, grad=True)
    out = dpo_loss(policy, reference, beta=beta, length_normalized=length_normalized)
    grad_chosen, grad_rejected = torch.autograd.grad(
        out.losses.sum(), [policy.chosen, policy.rejected]
    )
    assert (grad_chosen < 0).all() and (grad_rejected > 0).all()
    counts = (policy.chosen_count, policy.rejected_count) if length_normalized else (1, 1)
    h = (policy.chosen - reference.chosen) / counts[0] - (
        policy.rejected - reference.rejected
    ) / counts[1]
    weight = torch.sigmoid(-beta * h.detach())
    torch.testing.assert_close(grad_chosen, -beta * weight / counts[0])
    torch.testing.assert_close(grad_rejected, beta * weight / counts[1])


@pytest.mark.parametrize(
    "options", [{}, {"label_smoothing": 0.3}, {"length_normalized": True, "beta": 2.0}]
)
def test_dpogradcheck_policy(options):
    policy, reference = random_pairs(4, seed=4, grad=True)
    gradcheck_policy(lambda p: dpo_loss(p, reference, **options).losses, policy)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
def test_dpo_matches_plain_python(label_smoothing):
    beta = 0.25
    policy, reference = random_pairs(10, seed=5)
    out = dpo_loss(policy, reference, beta=beta, label_smoothing=label_smoothing)
    for i, ((pw, pl, _, _), (rw, rl, _, _)) in enumerate(
        zip(as_lists(policy), as_lists(reference), strict=True)
    ):
        z = beta * ((pw - rw) - (pl - rl))
        expected = (1 - label_smoothing) * neg_log_sigmoid(z) + label_smoothing * neg_log_sigmoid(
            -z
        )
        assert out.losses[i].item() == pytest.approx(expected, rel=1e-12)


def test_dpo_is_stable_for_large_margins():
    """h = ±1000: L = log(1 + e^−1000) ≈ 0 and log(1 + e^1000) ≈ 1000, no overflow to inf."""
    out = dpo_loss(pair([0.0, -1000.0], [-1000.0, 0.0]), pair([0.0, 0.0], [0.0, 0.0]), beta=1.0)
    assert out.losses[0].item() == pytest.approx(0.0, abs=1e-300)
    assert out.losses[1].item() == pytest.approx(1000.0)


def test_dpo_rewards_are_detached():
    policy, reference = random_pairs(3, seed=6, grad=True)
    out = dpo_loss(policy, reference)
    assert out.losses.requires_grad
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad


def test_length_normalized_dpo_needs_counts():
    with pytest.raises(ValueError, match="chosen_count and rejected_count"):
        dpo_loss(pair([-1.0], [-2.0]), pair([-1.0], [-1.0]), length_normalized=True)


# ---- robust DPO --------------------------------------------------------------------------------


def test_robust_hand_computed():
    """h = 2, β = 0.5 (β·h = 1), ε = 0.25; ℓ(1) = 0.3132617, ℓ(−1) = 1.3132617
    L = (0.75·0.3132617 − 0.25·1.3132617)/(1 − 0.5) = (0.2349463 − 0.3283154)/0.5 = −0.1867383
    """
    out = robust_dpo_loss(pair([-5.0], [-7.0]), pair([-6.0], [-6.0]), beta=0.5, flip_rate=0.25)
    assert out.losses.item() == pytest.approx(-0.1867383125, abs=1e-9)


def test_robust_is_unbiased_under_label_flips():
    """(1 − ε)·L(h) + ε·L(−h) = −log σ(β·h): in expectation over flips it is clean DPO."""
    policy, reference = random_pairs(8, seed=7)
    eps, beta = 0.3, 0.4
    noisy = (1 - eps) * robust_dpo_loss(
        policy, reference, beta=beta, flip_rate=eps
    ).losses + eps * (
        robust_dpo_loss(swap(policy), swap(reference), beta=beta, flip_rate=eps).losses
    )
    torch.testing.assert_close(noisy, dpo_loss(policy, reference, beta=beta).losses)


def test_robust_with_no_flips_is_dpo_and_lowers_rejected():
    policy, reference = random_pairs(8, seed=8, grad=True)
    torch.testing.assert_close(
        robust_dpo_loss(policy, reference, flip_rate=0.0).losses, dpo_loss(policy, reference).losses
    )
    out = robust_dpo_loss(policy, reference, flip_rate=0.2)
    grad_chosen, grad_rejected = torch.autograd.grad(
        out.losses.sum(), [policy.chosen, policy.rejected]
    )
    assert (grad_chosen < 0).all() and (grad_rejected > 0).all()


def test_robust_gradcheck_and_plain_python():
    policy, reference = random_pairs(5, seed=9, grad=True)
    gradcheck_policy(lambda p: robust_dpo_loss(p, reference, flip_rate=0.2).losses, policy)
    out = robust_dpo_loss(policy, reference, beta=0.3, flip_rate=0.2)
    for i, ((pw, pl, _, _), (rw, rl, _, _)) in enumerate(
        zip(as_lists(policy), as_lists(reference), strict=True)
    ):
        z = 0.3 * ((pw - rw) - (pl - rl))
        expected = (0.8 * neg_log_sigmoid(z) - 0.2 * neg_log_sigmoid(-z)) / 0.6
        assert out.losses[i].item() == pytest.approx(expected, rel=1e-12)


# ---- RPO ---------------------------------------------------------------------------------------


def test_rpo_hand_computed():
    """DPO term as above (h = 2, β = 0.5): 0.3132617
    NLL of chosen: −(−5)/4 tokens = 1.25; α = 0.5 → L = 0.3132617 + 0.5·1.25 = 0.9382617
    """
    out = rpo_loss(pair([-5.0], [-7.0], [4], [3]), pair([-6.0], [-6.0]), beta=0.5, alpha=0.5)
    assert out.losses.item() == pytest.approx(0.9382616875, abs=1e-9)
    assert out.terms["nll"].item() == pytest.approx(1.25)
    assert out.terms["dpo"].item() == pytest.approx(0.3132616875, abs=1e-9)


def test_rpo_adds_a_per_token_pull_on_chosen():
    """∂L/∂log π(y_w) = DPO's gradient − α/|y_w|; α = 0 is DPO; rejected gradient unchanged."""
    policy, reference = random_pairs(6, seed=10, grad=True)
    alpha = 0.7
    rpo = torch.autograd.grad(
        rpo_loss(policy, reference, alpha=alpha).losses.sum(), [policy.chosen, policy.rejected]
    )
    dpo = torch.autograd.grad(
        dpo_loss(policy, reference).losses.sum(), [policy.chosen, policy.rejected]
    )
    torch.testing.assert_close(rpo[0], dpo[0] - alpha / policy.chosen_count)
    torch.testing.assert_close(rpo[1], dpo[1])
    assert (rpo[0] < 0).all() and (rpo[1] > 0).all()
    torch.testing.assert_close(
        rpo_loss(policy, reference, alpha=0.0).losses, dpo_loss(policy, reference).losses
    )


def test_rpo_gradcheck_and_plain_python():
    policy, reference = random_pairs(5, seed=11, grad=True)
    gradcheck_policy(lambda p: rpo_loss(p, reference, alpha=0.5).losses, policy)
    out = rpo_loss(policy, reference, beta=0.2, alpha=0.5)
    for i, ((pw, pl, nw, _), (rw, rl, _, _)) in enumerate(
        zip(as_lists(policy), as_lists(reference), strict=True)
    ):
        expected = neg_log_sigmoid(0.2 * ((pw - rw) - (pl - rl))) + 0.5 * (-pw / nw)
        assert out.losses[i].item() == pytest.approx(expected, rel=1e-12)
