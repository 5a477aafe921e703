"""The Bradley–Terry reward-model loss: hand-computed values, margin, centring, properties."""

from __future__ import annotations

import math

import pytest
import torch

from prefalign.losses import bradley_terry_loss


def _tensor(values, grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def test_hand_computed_without_margin():
    """r⁺ = 1.5, r⁻ = 0.5: L = −log σ(1) = log(1 + e^−1) = 0.3132617
    r⁺ = −1, r⁻ = 1: L = −log σ(−2) = log(1 + e^2) = 2.1269280"""
    losses = bradley_terry_loss(_tensor([1.5, -1.0]), _tensor([0.5, 1.0]))
    assert losses.tolist() == pytest.approx([0.3132616875, 2.1269280110], abs=1e-9)


def test_hand_computed_margin():
    """Llama 2's margin: r⁺ = 1.5, r⁻ = 0.5, m = 1 → −log σ(1.5 − 0.5 − 1) = −log σ(0) = ln 2
    = 0.6931472; m = −1 → −log σ(2) = log(1 + e^−2) = 0.1269280; m = 0 → as without one."""
    chosen, rejected = _tensor([1.5, 1.5, 1.5]), _tensor([0.5, 0.5, 0.5])
    losses = bradley_terry_loss(chosen, rejected, margin=_tensor([1.0, -1.0, 0.0]))
    assert losses.tolist() == pytest.approx([math.log(2), 0.1269280110, 0.3132616875], abs=1e-9)


def test_hand_computed_centering():
    """η = 0.01, r⁺ = 1.5, r⁻ = 0.5: 0.3132617 + 0.01·(1.5 + 0.5)² = 0.3132617 + 0.04
    = 0.3532617; a pair summing to 0 (r⁺ = 1, r⁻ = −1) pays nothing extra: log(1 + e^−2)."""
    losses = bradley_terry_loss(_tensor([1.5, 1.0]), _tensor([0.5, -1.0]), centering=0.01)
    assert losses.tolist() == pytest.approx([0.3532616875, 0.1269280110], abs=1e-9)


def test_equal_rewards_give_ln2_whatever_their_value():
    rewards = torch.linspace(-30, 30, 7, dtype=torch.float64)
    torch.testing.assert_close(bradley_terry_loss(rewards, rewards.clone()),
                               torch.full((7,), math.log(2), dtype=torch.float64))


def test_swapping_sides_changes_the_loss_by_the_difference():
    """softplus(−d) − softplus(d) = −d, so L(r⁺, r⁻) − L(r⁻, r⁺) = −(r⁺ − r⁻) (no margin);
    the centring term is symmetric and cancels."""
    generator = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(2, 16, generator=generator, dtype=torch.float64)
    for centering in (0.0, 0.05):
        forward = bradley_terry_loss(chosen, rejected, centering=centering)
        swapped = bradley_terry_loss(rejected, chosen, centering=centering)
        torch.testing.assert_close(forward - swapped, -(chosen - rejected))


def test_shifting_both_rewards_changes_only_the_centring_term():
    generator = torch.Generator().manual_seed(1)
    chosen, rejected = torch.randn(2, 8, generator=generator, dtype=torch.float64)
    plain = bradley_terry_loss(chosen, rejected)
    torch.testing.assert_close(bradley_terry_loss(chosen + 3.0, rejected + 3.0), plain)
    centred = bradley_terry_loss(chosen + 3.0, rejected + 3.0, centering=0.1)
    torch.testing.assert_close(centred - plain, 0.1 * (chosen + rejected + 6.0).square())


def test_gradient_raises_chosen_and_lowers_rejected():
    chosen, rejected = _tensor([0.3, -2.0], grad=True), _tensor([0.1, 4.0], grad=True)
    bradley_terry_loss(chosen, rejected).sum().backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()  # descent raises r⁺, lowers r⁻
    # d/dr⁺ softplus(−d) = −σ(−d)
    expected = -torch.sigmoid(-(chosen.detach() - rejected.detach()))
    torch.testing.assert_close(chosen.grad, expected)
    torch.testing.assert_close(rejected.grad, -expected)


def test_gradcheck():
    generator = torch.Generator().manual_seed(2)
    chosen, rejected, margin = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    inputs = (chosen.requires_grad_(), rejected.requires_grad_())
    assert torch.autograd.gradcheck(
        lambda c, r: bradley_terry_loss(c, r, margin=margin, centering=0.2), inputs)


@pytest.mark.parametrize("centering", [-0.1, math.nan, math.inf])
def test_bad_centering_is_refused(centering):
    with pytest.raises(ValueError, match="centering"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(2), centering=centering)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="shape"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="margin"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(2), margin=torch.zeros(3))
