"""GRPO / Dr. GRPO / DAPO / RLOO pieces, each worked out by hand, plus properties and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from prefalign.losses.policy_gradient import (
    STD_EPS,
    clipped_surrogate,
    group_advantages,
    k3_kl,
    policy_gradient_loss,
    rloo_advantages,
    sequence_weights,
)

REWARDS = torch.tensor([1.0, 2.0, 3.0, 5.0])  # two groups of G = 2


def test_group_advantages_by_hand():
    """Groups [1, 2] and [3, 5]: means 1.5 and 4, unbiased stds √0.5 and √2.
    group: ±0.5/(√0.5 + ε), ±1/(√2 + ε); none (Dr. GRPO): ±0.5, ±1;
    batch: the four rewards' std √(8.75/3) = 1.70783 divides all."""
    expected_group = torch.tensor([-0.5 / (math.sqrt(0.5) + STD_EPS),
                                   0.5 / (math.sqrt(0.5) + STD_EPS),
                                   -1 / (math.sqrt(2) + STD_EPS), 1 / (math.sqrt(2) + STD_EPS)])
    torch.testing.assert_close(group_advantages(REWARDS, 2, "group"), expected_group)
    none = torch.tensor([-0.5, 0.5, -1.0, 1.0])
    torch.testing.assert_close(group_advantages(REWARDS, 2, "none"), none)
    torch.testing.assert_close(group_advantages(REWARDS, 2, "batch"),
                               none / (math.sqrt(8.75 / 3) + STD_EPS))


def test_a_tied_group_has_no_advantage():
    rewards = torch.tensor([0.7, 0.7, 0.7, 0.0, 1.0, 2.0])
    for scale in ("group", "batch", "none"):
        assert group_advantages(rewards, 3, scale)[:3].abs().max() == 0


def test_rloo_by_hand_and_its_identity():
    """[1, 2] → 1 − 2, 2 − 1; [3, 5] → −2, 2. In general A = G/(G−1)·(r − mean)."""
    torch.testing.assert_close(rloo_advantages(REWARDS, 2), torch.tensor([-1.0, 1, -2, 2]))
    rewards = torch.tensor([0.0, 3.0, 6.0, 1.0, 1.0, 4.0])
    centred = group_advantages(rewards, 3, "none")
    torch.testing.assert_close(rloo_advantages(rewards, 3), centred * 3 / 2)


def test_k3_by_hand():
    """log π = ln 0.5, log π_ref = ln 0.25: d = ln 0.5, k3 = 0.5 − ln 0.5 − 1 = 0.19315."""
    value = k3_kl(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)]))
    assert value.item() == pytest.approx(0.5 - math.log(0.5) - 1)
    assert k3_kl(torch.tensor([-2.0]), torch.tensor([-2.0])).item() == 0
    samples = torch.randn(1000, dtype=torch.float64)
    assert (k3_kl(samples, samples.flip(0)) >= 0).all()


@pytest.mark.parametrize(("ratio", "advantage", "high", "loss", "clipped"), [
    (1.5, 1.0, None, -1.2, True),   # ρA = 1.5 above (1 + ε)A = 1.2: the clip takes over
    (1.5, -1.0, None, 1.5, False),  # negative advantage: min(−1.5, −1.2) = −1.5, unclipped
    (1.5, 1.0, 0.6, -1.5, False),   # DAPO's ε_high = 0.6 lets ρ = 1.5 through
    (0.5, -1.0, None, 0.8, True),   # min(−0.5, −0.8): the clip at 1 − ε = 0.8
    (0.5, 1.0, None, -0.5, False),
])
def test_clipped_surrogate_by_hand(ratio, advantage, high, loss, clipped):
    old = torch.tensor([[-1.0]])
    out = clipped_surrogate(old + math.log(ratio), old, torch.tensor([advantage]),
                            epsilon=0.2, epsilon_high=high)
    assert out.losses.item() == pytest.approx(loss)
    assert out.clipped.item() is clipped
    assert out.ratio.item() == pytest.approx(ratio)


def test_on_policy_gradient_is_minus_the_advantage_per_token():
    """μ = 1: old = logps.detach(), so ρ = 1 and ∂L/∂log π_t = −A (the loss reads 0 + 0·A)."""
    logps = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    advantages = torch.tensor([1.5, -0.5, 0.0], dtype=torch.float64)
    out = clipped_surrogate(logps, logps.detach(), advantages)
    out.losses.sum().backward()
    torch.testing.assert_close(logps.grad, -advantages[:, None].expand(3, 4))
    torch.testing.assert_close(out.losses.detach(), -advantages[:, None].expand(3, 4))


def test_kl_penalty_and_gradcheck():
    generator = torch.Generator().manual_seed(0)
    logps = (torch.randn(2, 3, generator=generator, dtype=torch.float64) - 2).requires_grad_()
    old = logps.detach() + 0.1 * torch.randn(2, 3, generator=generator, dtype=torch.float64)
    reference = logps.detach() - 0.3
    advantages = torch.tensor([0.7, -1.2], dtype=torch.float64)

    def loss(x):
        return clipped_surrogate(x, old, advantages, epsilon=0.2, epsilon_high=0.28, beta=0.04,
                                 reference_logps=reference).losses

    assert torch.autograd.gradcheck(loss, (logps,))
    plain = clipped_surrogate(logps, old, advantages).losses
    with_kl = loss(logps)
    torch.testing.assert_close(with_kl - plain, 0.04 * k3_kl(logps, reference))


def test_normalisations_by_hand():
    """Two completions of 3 and 1 tokens, every token loss 1, width 4:
    grpo 1/(2·3)·3 + 1/(2·1)·1 = 1 (mean of token means); dr_grpo 4/(2·4) = 0.5; dapo 4/4 = 1.
    With token losses [1, 1, 1] and [5]: grpo (1 + 5)/2 = 3, dapo 8/4 = 2."""
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 0, 0, 0]])
    ones = torch.ones(2, 4)
    expected = {"grpo": [1 / 6, 1 / 2], "dr_grpo": [1 / 8, 1 / 8], "dapo": [1 / 4, 1 / 4]}
    for name, weights in expected.items():
        w = sequence_weights(mask, name)
        torch.testing.assert_close(w, torch.tensor(weights))
    assert policy_gradient_loss(ones, mask, sequence_weights(mask, "grpo")).sum() == 1
    assert policy_gradient_loss(ones, mask, sequence_weights(mask, "dr_grpo")).sum() == 0.5
    uneven = torch.tensor([[1.0, 1, 1, 9], [5, 9, 9, 9]])  # padding values must not count
    assert policy_gradient_loss(uneven, mask, sequence_weights(mask, "grpo")).sum() == 3
    assert policy_gradient_loss(uneven, mask, sequence_weights(mask, "dapo")).sum() == 2


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "dapo"])
def test_micro_batches_with_the_whole_batch_totals_give_the_whole_loss(name):
    generator = torch.Generator().manual_seed(3)
    mask = (torch.rand(6, 5, generator=generator) > 0.3).float()
    mask[:, 0] = 1
    losses = torch.randn(6, 5, generator=generator)
    whole = policy_gradient_loss(losses, mask, sequence_weights(mask, name)).sum()
    totals = {"num_sequences": 6, "max_completion_length": 5, "total_tokens": float(mask.sum())}
    parts = sum(policy_gradient_loss(losses[s], mask[s], sequence_weights(mask[s], name,
                                                                          **totals)).sum()
                for s in (slice(0, 2), slice(2, 6)))
    torch.testing.assert_close(parts, whole)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: group_advantages(torch.ones(5), 2), "divide the 5 rewards"),
    (lambda: group_advantages(torch.ones(4), 1), "group_size must be >= 2"),
    (lambda: group_advantages(torch.ones(4), 2, "rank"), "scale must be"),
    (lambda: clipped_surrogate(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1),
                               epsilon=1.5), "epsilon must be in"),
    (lambda: clipped_surrogate(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1),
                               beta=0.1), "beta > 0 needs reference_logps"),
    (lambda: sequence_weights(torch.ones(1, 1), "ppo"), "normalisation must be"),
])
def test_bad_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
