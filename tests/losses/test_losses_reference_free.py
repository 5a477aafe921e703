"""SimPO and ORPO: reference-free, length-normalised losses."""

from __future__ import annotations

import math

import pytest
import torch
from losses_helpers import as_lists, gradcheck_policy, neg_log_sigmoid, pair, random_pairs

from prefalign.losses import PairLogps, make_loss, orpo_loss, simpo_loss

# ---- SimPO -------------------------------------------------------------------------------------


def test_simpo_hand_computed():
    """chosen −6 over 3 tokens → mean −2; rejected −12 over 4 → mean −3; β = 2, γ = 1
    r_w = 2·(−2) = −4, r_l = 2·(−3) = −6; r_w − r_l − γ = 2 − 1 = 1
    L = log(1 + e^−1) = 0.3132617
    """
    out = simpo_loss(pair([-6.0], [-12.0], [3], [4]), beta=2.0, gamma=1.0)
    assert out.losses.item() == pytest.approx(0.3132616875, abs=1e-9)
    assert out.chosen_rewards.item() == pytest.approx(-4.0)
    assert out.rejected_rewards.item() == pytest.approx(-6.0)


def test_simpo_is_ln2_when_the_margin_equals_gamma():
    """means −1 and −1.25, β = 2 → reward margin 0.5 = γ → L = ln 2."""
    out = simpo_loss(pair([-2.0], [-5.0], [2], [4]), beta=2.0, gamma=0.5)
    assert out.losses.item() == pytest.approx(math.log(2))


def test_simpo_ignores_length_and_needs_no_reference():
    policy, _ = random_pairs(5, seed=30)
    doubled = PairLogps(
        3 * policy.chosen, 3 * policy.rejected, 3 * policy.chosen_count, 3 * policy.rejected_count
    )
    torch.testing.assert_close(simpo_loss(doubled).losses, simpo_loss(policy).losses)
    configured = make_loss("simpo")
    assert not configured.needs_reference
    torch.testing.assert_close(configured(policy).losses, simpo_loss(policy).losses)


def test_simpo_gradient_raises_chosen_and_lowers_rejected():
    """∂L/∂log π(y_w) = −σ(−z)·β/n_w < 0 with z = r_w − r_l − γ; mirror for y_l."""
    policy, _ = random_pairs(6, seed=31, grad=True)
    out = simpo_loss(policy, beta=2.0, gamma=0.5)
    grad_chosen, grad_rejected = torch.autograd.grad(
        out.losses.sum(), [policy.chosen, policy.rejected]
    )
    assert (grad_chosen < 0).all() and (grad_rejected > 0).all()


def test_simpo_gradcheck_and_plain_python():
    policy, _ = random_pairs(6, seed=32, grad=True)
    gradcheck_policy(lambda p: simpo_loss(p, beta=2.5, gamma=0.3).losses, policy)
    out = simpo_loss(policy, beta=2.5, gamma=0.3)
    for i, (pw, pl, nw, nl) in enumerate(as_lists(policy)):
        expected = neg_log_sigmoid(2.5 * pw / nw - 2.5 * pl / nl - 0.3)
        assert out.losses[i].item() == pytest.approx(expected, rel=1e-12)


# ---- ORPO --------------------------------------------------------------------------------------


def test_orpo_hand_computed():
    """chosen: 2 tokens of probability 0.5 → P = 0.5, odds 1, log odds 0
    rejected: 3 tokens of probability 0.2 → P = 0.2, odds 0.25, log odds = ln 0.25 = −1.3862944
    log odds ratio = 0 − (−1.3862944) = 1.3862944
    L_OR = log(1 + e^−1.3862944) = log(1 + 0.25) = 0.2231436
    NLL = −ln 0.5 = 0.6931472; λ = 0.1 → L = 0.6931472 + 0.0223144 = 0.7154615
    """
    out = orpo_loss(pair([2 * math.log(0.5)], [3 * math.log(0.2)], [2], [3]), beta=0.1)
    assert out.losses.item() == pytest.approx(0.7154615357, abs=1e-9)
    assert out.terms["log_odds_ratio"].item() == pytest.approx(math.log(4))
    assert out.terms["odds_ratio"].item() == pytest.approx(math.log(1.25))
    assert out.terms["nll"].item() == pytest.approx(math.log(2))


def test_orpo_equal_odds_give_ln2_times_lambda_plus_nll():
    """Same mean log-prob −1 on both sides: L_OR = ln 2, NLL = 1 → L = 1 + 0.2·ln 2."""
    out = orpo_loss(pair([-3.0], [-2.0], [3], [2]), beta=0.2)
    assert out.losses.item() == pytest.approx(1 + 0.2 * math.log(2))


def test_orpo_stays_finite_when_a_response_is_certain():
    """Mean log-prob exactly 0 (P = 1) would make log(1 − P) = −inf; the clamp keeps it finite."""
    policy = pair([0.0], [-4.0], [2], [2], grad=True)
    out = orpo_loss(policy)
    assert torch.isfinite(out.losses).all()
    grads = torch.autograd.grad(out.losses.sum(), [policy.chosen, policy.rejected])
    assert all(torch.isfinite(g).all() for g in grads)


def test_orpo_gradient_raises_chosen_and_lowers_rejected():
    policy, _ = random_pairs(6, seed=33, grad=True)
    out = orpo_loss(policy, beta=0.5)
    grad_chosen, grad_rejected = torch.autograd.grad(
        out.losses.sum(), [policy.chosen, policy.rejected]
    )
    assert (grad_chosen < 0).all() and (grad_rejected > 0).all()


def test_orpo_gradcheck_and_plain_python():
    policy, _ = random_pairs(6, seed=34, grad=True)
    gradcheck_policy(lambda p: orpo_loss(p, beta=0.3).losses, policy)
    out = orpo_loss(policy, beta=0.3)
    for i, (pw, pl, nw, nl) in enumerate(as_lists(policy)):
        p_w, p_l = math.exp(pw / nw), math.exp(pl / nl)
        log_odds_ratio = math.log(p_w / (1 - p_w)) - math.log(p_l / (1 - p_l))
        expected = -pw / nw + 0.3 * neg_log_sigmoid(log_odds_ratio)
        assert out.losses[i].item() == pytest.approx(expected, rel=1e-10)
