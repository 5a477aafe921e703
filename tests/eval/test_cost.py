"""Cost-of-alignment numbers: perplexity and the KL estimate against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from prefalign.eval.cost import kl_estimate, perplexity, perplexity_summary, response_pairs


def test_perplexity_is_token_weighted():
    # (−2 − 4) over 1 + 3 tokens: exp(6 / 4), not the mean of exp(2) and exp(4 / 3)
    assert perplexity(torch.tensor([-2.0, -4.0]), torch.tensor([1, 3])) == pytest.approx(
        math.exp(1.5))


def test_perplexity_of_nothing_is_none():
    assert perplexity(torch.tensor([]), torch.tensor([], dtype=torch.long)) is None


def test_perplexity_summary_compares_both_models_on_the_same_tokens():
    summary = perplexity_summary(torch.tensor([-3.0, -1.0]), torch.tensor([-2.0, -2.0]),
                                 torch.tensor([2, 2]))
    assert summary == {"reference": pytest.approx(1.0 * math.exp(1.0)),
                       "policy": pytest.approx(math.exp(1.0)), "n": 2, "tokens": 4}


def test_kl_estimate_by_hand():
    # differences 1 and 3: mean 2, sample std sqrt(2), stderr sqrt(2)/sqrt(2) = 1; 4 / 4 tokens
    estimate = kl_estimate(torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -5.0]),
                           torch.tensor([2, 2]))
    assert estimate == {"mean": pytest.approx(2.0), "stderr": pytest.approx(1.0),
                        "per_token": pytest.approx(1.0), "n": 2}


def test_kl_estimate_of_identical_models_is_zero_and_empty_is_none():
    logps = torch.tensor([-4.0, -7.5, -1.0])
    assert kl_estimate(logps, logps, torch.tensor([3, 4, 1]))["mean"] == 0.0
    assert kl_estimate(logps[:0], logps[:0], torch.tensor([], dtype=torch.long))["mean"] is None
    assert kl_estimate(logps[:1], logps[:1] - 1, torch.tensor([1]))["stderr"] is None


def test_response_pairs_put_the_response_on_both_sides():
    pairs = response_pairs([[1, 2], [3]], [[7, 8, 2], [9]])
    assert [(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in pairs] == [
        ((1, 2), (7, 8, 2), (7, 8, 2)), ((3,), (9,), (9,))]
