"""Held-out metrics, each worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from prefalign.data.audit import length_bias
from prefalign.engine.metrics import (
    PairRecords,
    both_fall_fraction,
    concat_records,
    eval_metrics,
    length_balanced_accuracy,
    length_only_accuracy,
    pearson,
)


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_length_only_accuracy_counts_ties_half_and_matches_the_audit():
    """(c, r) = (3,5) (2,9) (7,4) (5,5): prefer-shorter wins 2 + ½ of 4 = 0.625,
    prefer-longer 1 + ½ = 0.375; the baseline is the better rule."""
    chosen, rejected = t(3, 2, 7, 5), t(5, 9, 4, 5)
    assert length_only_accuracy(chosen, rejected) == 0.625
    assert length_only_accuracy(rejected, chosen) == 0.625  # now prefer-longer wins
    audit = length_bias([3, 2, 7, 5], [5, 9, 4, 5], "tokens")
    assert length_only_accuracy(chosen, rejected) == pytest.approx(audit.length_only_accuracy)


def test_length_balanced_accuracy_by_hand():
    """Chosen shorter in pairs 0-3 (3 of 4 right: 0.75), longer in 4-5 (1 of 2: 0.5), pair 6
    equal (in neither group). value = (0.75 + 0.5)/2 = 0.625;
    se = ½·sqrt(0.75·0.25/4 + 0.5·0.5/2) = ½·sqrt(0.046875 + 0.125) = 0.207289;
    interval 0.625 ± 1.96·0.207289 = [0.21872, 1.03128]."""
    correct = torch.tensor([True, True, True, False, True, False, True])
    chosen, rejected = t(1, 1, 1, 1, 5, 5, 3), t(2, 2, 2, 2, 4, 4, 3)
    result = length_balanced_accuracy(correct, chosen, rejected)
    assert (result.n_chosen_shorter, result.n_chosen_longer) == (4, 2)
    assert result.accuracy_chosen_shorter == 0.75 and result.accuracy_chosen_longer == 0.5
    assert result.value == 0.625
    assert result.low == pytest.approx(0.625 - 1.959964 * 0.2072891, abs=1e-6)
    assert result.high == pytest.approx(0.625 + 1.959964 * 0.2072891, abs=1e-6)


def test_a_length_only_rule_scores_exactly_one_half_balanced():
    chosen, rejected = t(1, 1, 1, 9, 2), t(5, 5, 5, 3, 8)
    prefers_shorter = chosen < rejected  # the rule's verdict is right exactly when chosen is shorter
    assert length_balanced_accuracy(prefers_shorter, chosen, rejected).value == 0.5
    empty_group = length_balanced_accuracy(prefers_shorter[:3], chosen[:3], rejected[:3])
    assert empty_group.value is None and empty_group.n_chosen_longer == 0


def test_pearson_by_hand():
    """x = 1 2 3, y = 2 4 7: dx = -1 0 1, dy = -2.333 -0.333 2.667; Σdxdy = 5,
    Σdx² = 2, Σdy² = 12.667; r = 5 / sqrt(25.333) = 0.99340."""
    assert pearson(t(1, 2, 3), t(2, 4, 7)) == pytest.approx(5 / math.sqrt(2 * 38 / 3))
    assert pearson(t(1, 1, 1), t(2, 4, 7)) is None
    assert pearson(t(1), t(2)) is None


def test_both_fall_fraction():
    assert both_fall_fraction(t(-1, -1, 1, -2), t(-1, 2, -1, -3)) == 0.5


def _records(reference=True):
    """Three pairs. Rewards (c, r): (1, 0) right, (0, 2) wrong, (0.5, 0.5) a tie (wrong).
    Policy log-probs (c, r): (-10, -12), (-8, -6), (-5, -9); reference (-9, -11), (-9, -7),
    (-5, -8). Tokens (c, r): (3, 5), (6, 2), (4, 4)."""
    return PairRecords(
        losses=t(0.2, 0.9, 0.7),
        chosen_rewards=t(1, 0, 0.5), rejected_rewards=t(0, 2, 0.5),
        policy_chosen=t(-10, -8, -5), policy_rejected=t(-12, -6, -9),
        reference_chosen=t(-9, -9, -5) if reference else None,
        reference_rejected=t(-11, -7, -8) if reference else None,
        chosen_tokens=torch.tensor([3, 6, 4]), rejected_tokens=torch.tensor([5, 2, 4]),
    )


def test_eval_metrics_by_hand():
    """loss (0.2+0.9+0.7)/3 = 0.6; accuracy 1/3; margin (1 − 2 + 0)/3 = −1/3;
    policy margin (2 − 2 + 4)/3 = 4/3, reference margin (2 − 2 + 3)/3 = 1;
    chosen change (−1 + 1 + 0)/3 = 0, rejected change (−1 + 1 − 1)/3 = −1/3;
    both fall: pair 0 only (pair 2's chosen change is 0, not below) = 1/3;
    length only: shorter-chosen 1 + ½ = 1.5 of 3, longer 1.5 → 0.5;
    balanced: shorter group {0} right, longer group {1} wrong → 0.5;
    margins 1, −2, 0 = −½ × the length differences −2, 4, 0, so r = −1."""
    metrics = eval_metrics(_records())
    expected = {"loss": 0.6, "accuracy": 1 / 3, "margin": -1 / 3, "policy_margin": 4 / 3,
                "reference_margin": 1.0, "chosen_logp_change": 0.0,
                "rejected_logp_change": -1 / 3, "both_fall": 1 / 3,
                "length_only_accuracy": 0.5, "length_balanced_accuracy": 0.5,
                "chosen_shorter_fraction": 1 / 3}
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key
    assert metrics["reward_length_corr"] == pytest.approx(-1.0)
    # one pair per group, each right or wrong for sure: the Wald interval collapses to a point
    assert metrics["length_balanced_accuracy_low"] == metrics["length_balanced_accuracy_high"]


def test_without_a_reference_the_change_metrics_are_left_out():
    metrics = eval_metrics(_records(reference=False))
    assert "chosen_logp_change" not in metrics and "reference_margin" not in metrics
    assert metrics["policy_margin"] == pytest.approx(4 / 3)


def test_concat_records_keeps_order():
    joined = concat_records([_records(), _records()])
    assert joined.losses.tolist() == pytest.approx([0.2, 0.9, 0.7] * 2)
    assert concat_records([_records(False), _records(False)]).reference_chosen is None
