"""Token choice: greedy is argmax, the top-k and top-p cuts match their definitions, draws follow
the cut distribution, and each sequence's stream depends on (seed, key, sample) only."""

from __future__ import annotations

import pytest
import torch

from prefalign.engine.sampling.choose import candidate_probs, choose_tokens, sequence_generator
from prefalign.engine.sampling.settings import DecodeSettings


def sampling(**fields) -> DecodeSettings:
    return DecodeSettings(do_sample=True, **fields)


def generators(count: int, seed: int = 0) -> list[torch.Generator]:
    return [sequence_generator(seed, "key", sample) for sample in range(count)]


def test_greedy_is_argmax() -> None:
    logits = torch.randn(5, 40, generator=torch.Generator().manual_seed(1))
    assert torch.equal(choose_tokens(logits, DecodeSettings()), logits.argmax(dim=-1))


def test_top_k_one_and_a_tiny_top_p_are_greedy() -> None:
    logits = torch.randn(6, 40, generator=torch.Generator().manual_seed(2))
    for settings in (sampling(top_k=1), sampling(top_p=1e-6), sampling(temperature=3.0, top_k=1)):
        assert torch.equal(choose_tokens(logits, settings, generators(6)), logits.argmax(dim=-1))


def test_top_p_keeps_the_smallest_set_that_reaches_it() -> None:
    """probs (0.5, 0.3, 0.15, 0.05), top_p 0.8: the tokens above each hold (0, 0.5, 0.8, 0.95);
    a token stays while that is < 0.8, so only the first two stay. top_p 0.81 keeps three."""
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    probs, ids = candidate_probs(logits, sampling(top_p=0.8))
    assert ids is not None
    kept = {int(i) for i, p in zip(ids[0], probs[0], strict=True) if p > 0}
    assert kept == {0, 1}
    probs, ids = candidate_probs(logits, sampling(top_p=0.81))
    assert ids is not None
    assert {int(i) for i, p in zip(ids[0], probs[0], strict=True) if p > 0} == {0, 1, 2}


def test_top_k_then_top_p_renormalises_over_the_k_best() -> None:
    """probs (0.4, 0.3, 0.2, 0.1), top_k 2: the two best renormalise to (4/7, 3/7); top_p 0.5
    then keeps only the first (the tokens above the second hold 4/7 >= 0.5)."""
    logits = torch.tensor([[0.1, 0.4, 0.2, 0.3]]).log()
    probs, ids = candidate_probs(logits, sampling(top_k=2))
    assert ids is not None and ids.tolist() == [[1, 3]]
    torch.testing.assert_close(probs, torch.tensor([[4 / 7, 3 / 7]]))
    probs, ids = candidate_probs(logits, sampling(top_k=2, top_p=0.5))
    torch.testing.assert_close(probs, torch.tensor([[4 / 7, 0.0]]))


def test_draws_follow_the_cut_distribution() -> None:
    """20,000 draws (one stream per draw) from temperature 2, top-k 3 over 5 tokens: each
    kept token's frequency is within 0.015 of its probability, cut tokens are never drawn."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 3.0])
    settings = sampling(temperature=2.0, top_k=3)
    count = 20_000
    rows = logits.expand(count, -1)
    tokens = choose_tokens(rows, settings, generators(count, seed=5))
    frequencies = torch.bincount(tokens, minlength=5).double() / count
    expected = torch.zeros(5, dtype=torch.float64)
    top = torch.tensor([4, 0, 1])
    expected[top] = (logits[top] / 2.0).double().softmax(dim=0)
    assert frequencies[2] == 0 and frequencies[3] == 0
    assert (frequencies - expected).abs().max() < 0.015


def test_without_cuts_every_token_can_be_drawn() -> None:
    logits = torch.zeros(4000, 8)
    tokens = choose_tokens(logits, sampling(), generators(4000))
    assert set(tokens.tolist()) == set(range(8))


def test_streams_depend_on_seed_key_and_sample_only() -> None:
    def first(seed: int, key: str | int, sample: int) -> float:
        return float(torch.rand(1, generator=sequence_generator(seed, key, sample)))

    assert first(0, "a", 0) == first(0, "a", 0)
    values = {first(0, "a", 0), first(1, "a", 0), first(0, "b", 0), first(0, "a", 1),
              first(0, 0, 0), first(0, 1, 0)}
    assert len(values) == 6


def test_one_generator_per_row_is_required() -> None:
    with pytest.raises(ValueError, match="3 rows but 2 generators"):
        choose_tokens(torch.zeros(3, 5), sampling(), generators(2))
