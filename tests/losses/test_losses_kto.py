"""KTO over unpaired desirable/undesirable responses, and its KL reference point."""

from __future__ import annotations

import pytest
import torch
from losses_helpers import sigmoid

from prefalign.losses import kto_kl_reference, kto_loss, make_loss


def _t(values, grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def test_kto_hand_computed():
    """β = 0.5, z0 = 1, λ_D = 1, λ_U = 2.
    desirable: r = −5 − (−7) = 2 → L = 1·(1 − σ(0.5·(2 − 1))) = 1 − 0.6224593 = 0.3775407
    undesirable: r = −8 − (−7) = −1 → L = 2·(1 − σ(0.5·(1 − (−1)))) = 2·(1 − 0.7310586) = 0.5378828
    """
    out = kto_loss(
        _t([-5.0, -8.0]),
        _t([-7.0, -7.0]),
        desirable=torch.tensor([True, False]),
        kl_reference=1.0,
        beta=0.5,
        desirable_weight=1.0,
        undesirable_weight=2.0,
    )
    torch.testing.assert_close(out.losses, _t([0.3775406688, 0.5378828427]))
    torch.testing.assert_close(out.rewards, _t([1.0, -0.5]))


def test_kto_at_the_reference_point_costs_half_the_weight():
    """r = z0 → σ(0) = 1/2 → L = λ/2 for either label."""
    out = kto_loss(
        _t([-3.0, -3.0]),
        _t([-4.0, -4.0]),
        desirable=torch.tensor([True, False]),
        kl_reference=torch.tensor(1.0),
        desirable_weight=1.0,
        undesirable_weight=3.0,
    )
    torch.testing.assert_close(out.losses, _t([0.5, 1.5]))


def test_kto_gradients_and_detached_reference_point():
    """Desirable responses are pushed up, undesirable down; z0 receives no gradient."""
    policy = _t([-5.0, -6.0, -2.0, -9.0], grad=True)
    z0 = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    out = kto_loss(
        policy,
        _t([-5.5, -5.0, -2.0, -9.5]),
        desirable=torch.tensor([True, True, False, False]),
        kl_reference=z0,
    )
    (grad,) = torch.autograd.grad(out.losses.sum(), [policy])
    assert (grad[:2] < 0).all() and (grad[2:] > 0).all()
    assert z0.grad is None and not out.rewards.requires_grad


def test_kto_gradcheck_and_plain_python():
    policy = _t([-5.0, -6.0, -2.0, -9.0], grad=True)
    reference = _t([-5.5, -5.0, -2.5, -8.0])
    desirable = torch.tensor([True, False, True, False])

    def losses(p):
        return kto_loss(
            p, reference, desirable=desirable, kl_reference=0.2, beta=0.7, undesirable_weight=1.5
        ).losses

    assert torch.autograd.gradcheck(losses, (policy,))
    out = losses(policy)
    for i, (p, r, good) in enumerate(
        zip(policy.tolist(), reference.tolist(), desirable.tolist(), strict=True)
    ):
        expected = (
            1 - sigmoid(0.7 * (p - r - 0.2)) if good else 1.5 * (1 - sigmoid(0.7 * (0.2 - p + r)))
        )
        assert out[i].item() == pytest.approx(expected, rel=1e-12)


def test_kl_reference_is_a_clamped_detached_mean():
    """mean([−3 − (−4), −5 − (−5)]) = mean([1, 0]) = 0.5; a negative mean clamps to 0."""
    policy = _t([-3.0, -5.0], grad=True)
    z0 = kto_kl_reference(policy, _t([-4.0, -5.0]))
    assert z0.item() == pytest.approx(0.5) and not z0.requires_grad
    assert kto_kl_reference(_t([-6.0]), _t([-5.0])).item() == 0.0


def test_kto_rejects_bad_inputs():
    with pytest.raises(ValueError, match="desirable must be a bool tensor"):
        kto_loss(_t([-1.0]), _t([-1.0]), desirable=torch.tensor([1]), kl_reference=0.0)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        kto_loss(_t([-1.0]), _t([-1.0, -2.0]), desirable=torch.tensor([True]), kl_reference=0.0)


def test_configured_kto_takes_its_data_inputs_by_keyword():
    loss = make_loss("kto", beta=0.5, undesirable_weight=2.0)
    assert set(loss.params) == {"beta", "desirable_weight", "undesirable_weight"}
    out = loss(
        _t([-5.0, -8.0]), _t([-7.0, -7.0]), desirable=torch.tensor([True, False]), kl_reference=1.0
    )
    torch.testing.assert_close(out.losses, _t([0.3775406688, 0.5378828427]))
