"""IPO and the SLiC hinge loss: values, targets, length behaviour and gradients."""

from __future__ import annotations

import pytest
import torch
from losses_helpers import as_lists, gradcheck_policy, pair, random_pairs

from prefalign.losses import PairLogps, hinge_loss, ipo_loss

# ---- IPO ---------------------------------------------------------------------------------------


def test_ipo_hand_computed():
    """chosen: (−4 − (−6))/2 tokens = 1 per token; rejected: (−9 − (−6))/3 tokens = −1 per token
    h̄ = 1 − (−1) = 2; τ = 0.5 → target 1/(2τ) = 1; L = (2 − 1)² = 1
    rewards: τ·1 = 0.5 and τ·(−1) = −0.5
    """
    out = ipo_loss(pair([-4.0], [-9.0], [2], [3]), pair([-6.0], [-6.0]), beta=0.5)
    assert out.losses.item() == pytest.approx(1.0)
    assert out.chosen_rewards.item() == pytest.approx(0.5)
    assert out.rejected_rewards.item() == pytest.approx(-0.5)


def test_ipo_is_zero_with_zero_gradient_at_its_target():
    """τ = 0.25 → target h̄ = 2: chosen (−2 − (−4))/1 = 2, rejected (−3 − (−3))/5 = 0."""
    policy = pair([-2.0], [-3.0], [1], [5], grad=True)
    out = ipo_loss(policy, pair([-4.0], [-3.0]), beta=0.25)
    assert out.losses.item() == pytest.approx(0.0)
    grads = torch.autograd.grad(out.losses.sum(), [policy.chosen, policy.rejected])
    assert all(g.item() == pytest.approx(0.0) for g in grads)


def test_ipo_averages_so_length_does_not_matter():
    """Doubling every response (sums and counts ×2) leaves per-token margins and the loss alone."""
    policy, reference = random_pairs(6, seed=20)
    doubled = [
        PairLogps(2 * p.chosen, 2 * p.rejected, 2 * p.chosen_count, 2 * p.rejected_count)
        for p in (policy, reference)
    ]
    torch.testing.assert_close(ipo_loss(*doubled).losses, ipo_loss(policy, reference).losses)


def test_ipo_below_target_raises_chosen_and_lowers_rejected():
    """At h̄ = 0 < 1/(2τ): ∂L/∂log π(y_w) = 2(h̄ − 1/(2τ))/n_w < 0, and the mirror for y_l."""
    policy, _ = random_pairs(6, seed=21, grad=True)
    out = ipo_loss(policy, _detached(policy), beta=0.1)  # h̄ = 0, target 1/(2·0.1) = 5
    grad_chosen, grad_rejected = torch.autograd.grad(
        out.losses.sum(), [policy.chosen, policy.rejected]
    )
    assert (grad_chosen < 0).all() and (grad_rejected > 0).all()
    torch.testing.assert_close(grad_chosen, -2 * 5.0 / policy.chosen_count.double())


def test_ipo_gradcheck_and_plain_python():
    policy, reference = random_pairs(6, seed=22, grad=True)
    gradcheck_policy(lambda p: ipo_loss(p, reference, beta=0.3).losses, policy)
    out = ipo_loss(policy, reference, beta=0.3)
    for i, ((pw, pl, nw, nl), (rw, rl, _, _)) in enumerate(
        zip(as_lists(policy), as_lists(reference), strict=True)
    ):
        expected = ((pw - rw) / nw - (pl - rl) / nl - 1 / 0.6) ** 2
        assert out.losses[i].item() == pytest.approx(expected, rel=1e-12)


# ---- hinge -------------------------------------------------------------------------------------


def test_hinge_hand_computed():
    """h = (−5 + 6) − (−7 + 6) = 2. β = 0.25: max(0, 1 − 0.5) = 0.5; β = 1: max(0, 1 − 2) = 0."""
    policy, reference = pair([-5.0], [-7.0]), pair([-6.0], [-6.0])
    assert hinge_loss(policy, reference, beta=0.25).losses.item() == pytest.approx(0.5)
    assert hinge_loss(policy, reference, beta=1.0).losses.item() == 0.0


def test_hinge_gradient_is_minus_beta_inside_the_margin_and_zero_beyond():
    """Pair 0: β·h = 0.25·2 = 0.5 < 1 → ∂L/∂chosen = −β, ∂L/∂rejected = +β.
    Pair 1: β·h = 0.25·8 = 2 ≥ 1 → satisfied, no gradient."""
    policy = pair([-5.0, -1.0], [-7.0, -9.0], grad=True)
    out = hinge_loss(policy, pair([-6.0, -1.0], [-6.0, -1.0]), beta=0.25)
    grad_chosen, grad_rejected = torch.autograd.grad(
        out.losses.sum(), [policy.chosen, policy.rejected]
    )
    torch.testing.assert_close(grad_chosen, torch.tensor([-0.25, 0.0], dtype=torch.float64))
    torch.testing.assert_close(grad_rejected, torch.tensor([0.25, 0.0], dtype=torch.float64))


def test_hinge_gradcheck_and_plain_python():
    policy, reference = random_pairs(6, seed=23, grad=True)
    # β small enough that every random pair sits strictly inside the margin (away from the kink)
    gradcheck_policy(lambda p: hinge_loss(p, reference, beta=0.01).losses, policy)
    out = hinge_loss(policy, reference, beta=0.2)
    for i, ((pw, pl, _, _), (rw, rl, _, _)) in enumerate(
        zip(as_lists(policy), as_lists(reference), strict=True)
    ):
        expected = max(0.0, 1 - 0.2 * ((pw - rw) - (pl - rl)))
        assert out.losses[i].item() == pytest.approx(expected, rel=1e-12, abs=1e-15)


def _detached(p: PairLogps) -> PairLogps:
    return PairLogps(p.chosen.detach(), p.rejected.detach(), p.chosen_count, p.rejected_count)
