"""Batched KV-cache generation on a tiny real Llama: padding and batching do not change greedy
outputs, input order is restored, stopping and hit_max are right, sampling is seeded."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from transformers import GenerationConfig

from prefalign.data.template import batch_token_ids, render_prompt
from prefalign.data.types import Message
from prefalign.eval.generate import DecodeSettings, Generation, generate, stop_token_ids
from tiny import build_tiny_tokenizer
from tiny_models import stopping_llama

TEXTS = ["Hello!", "What is the capital of France? Tell me a joke about a cat.", "Hi",
         "Please explain how a bicycle works, step by step.", "Why?", "The quick brown fox",
         "Tell me about the sea.", "0123456789"]
PROMPTS = [(Message("user", text),) for text in TEXTS]
GREEDY = DecodeSettings(max_new_tokens=12, batch_size=3)


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return stopping_llama(tiny_tokenizer)


@pytest.fixture(scope="module")
def batched(model, tiny_tokenizer) -> list[Generation]:
    return generate(model, tiny_tokenizer, PROMPTS, GREEDY, desc="test")


def test_batched_greedy_equals_one_at_a_time(model, tiny_tokenizer, batched) -> None:
    alone = [generate(model, tiny_tokenizer, [p], DecodeSettings(max_new_tokens=12))[0]
             for p in PROMPTS]
    assert batched == alone
    assert len({g.response_ids for g in batched}) == len(PROMPTS)  # outputs differ per prompt


def test_input_order_is_restored(model, tiny_tokenizer, batched) -> None:
    backwards = generate(model, tiny_tokenizer, PROMPTS[::-1], GREEDY)
    assert backwards[::-1] == batched
    expected = batch_token_ids(tiny_tokenizer, [render_prompt(tiny_tokenizer, p) for p in PROMPTS])
    assert [list(g.prompt_ids) for g in batched] == expected


def test_stop_token_ends_the_response(tiny_tokenizer, batched) -> None:
    eot = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    stopped = [g for g in batched if not g.hit_max]
    capped = [g for g in batched if g.hit_max]
    assert stopped and capped  # the fixture has both kinds
    for g in stopped:
        assert g.response_ids[-1] == eot and eot not in g.response_ids[:-1]
        assert "<|im_end|>" not in g.text and g.num_tokens == len(g.response_ids) <= 12
    for g in capped:
        assert g.num_tokens == len(g.response_ids) == 12 and eot not in g.response_ids
    assert all(g.text == tiny_tokenizer.decode(g.response_ids, skip_special_tokens=True)
               for g in batched)


def test_hit_max_at_the_boundary(model, tiny_tokenizer, batched) -> None:
    """A response that stops after n tokens: with max_new_tokens=n it still stopped (hit_max
    False); with n-1 it is cut (hit_max True) and is the same response without the stop token."""
    longest = max((g for g in batched if not g.hit_max and g.num_tokens > 1),
                  key=lambda g: g.num_tokens)
    prompt = PROMPTS[batched.index(longest)]
    n = longest.num_tokens
    exact = generate(model, tiny_tokenizer, [prompt], DecodeSettings(max_new_tokens=n))[0]
    assert exact == longest and not exact.hit_max
    cut = generate(model, tiny_tokenizer, [prompt], DecodeSettings(max_new_tokens=n - 1))[0]
    assert cut.hit_max and cut.response_ids == longest.response_ids[:-1]


def test_sampling_is_reproducible(model, tiny_tokenizer, batched) -> None:
    settings = DecodeSettings(do_sample=True, temperature=1.5, top_p=0.95, max_new_tokens=12,
                              seed=7, batch_size=3)
    first = generate(model, tiny_tokenizer, PROMPTS, settings)
    torch.manual_seed(12345)  # the global state before the call does not matter
    assert generate(model, tiny_tokenizer, PROMPTS, settings) == first
    other_seed = DecodeSettings(**{**settings.to_dict(), "seed": 8})
    assert generate(model, tiny_tokenizer, PROMPTS, other_seed) != first
    assert first != batched


def test_eos_distinct_from_end_of_turn_also_stops() -> None:
    """With eos <|endoftext|> and the template's <|im_end|>, both stop generation."""
    tokenizer = build_tiny_tokenizer()
    tokenizer.eos_token = "<|endoftext|>"
    eos, eot = (tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>"))
    assert stop_token_ids(tokenizer) == [eot, eos]
    model = stopping_llama(tokenizer, stop_token="<|endoftext|>", scale=6.0)
    results = generate(model, tokenizer, PROMPTS, GREEDY)
    ended_by_eos = [g for g in results if g.response_ids and g.response_ids[-1] == eos]
    assert ended_by_eos and all(not g.hit_max for g in ended_by_eos)


def test_model_generation_config_does_not_change_outputs(tiny_tokenizer, batched) -> None:
    """A checkpoint's generation_config.json (repetition penalty, top_k, temperature) is
    overridden by the recorded settings."""
    model = stopping_llama(tiny_tokenizer)
    model.generation_config = GenerationConfig(repetition_penalty=2.0, no_repeat_ngram_size=1,
                                               temperature=0.1, top_k=3, do_sample=True)
    assert generate(model, tiny_tokenizer, PROMPTS, GREEDY) == batched


def test_no_generation_warnings(model, tiny_tokenizer, caplog) -> None:
    """Neither greedy nor sampled decoding makes transformers warn about its settings."""
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generate(model, tiny_tokenizer, PROMPTS[:2], DecodeSettings(max_new_tokens=4))
        generate(model, tiny_tokenizer, PROMPTS[:2],
                 DecodeSettings(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=4))
    assert [r.getMessage() for r in caplog.records] == []
    assert [str(w.message) for w in caught] == []


def test_empty_prompt_list(model, tiny_tokenizer) -> None:
    assert generate(model, tiny_tokenizer, [], GREEDY) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("do_sample", 1), ("temperature", 0.0), ("temperature", float("nan")), ("top_p", 0.0),
     ("top_p", 1.5), ("top_k", -1), ("top_k", 1.0), ("max_new_tokens", 0),
     ("max_new_tokens", 2.0), ("seed", -1), ("num_samples", 0), ("batch_size", 0),
     ("batch_size", True)],
)
def test_decode_settings_validation(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"decoding.{field}: "):
        DecodeSettings(**{field: value})


def test_decode_settings_to_dict() -> None:
    assert DecodeSettings().to_dict() == {"do_sample": False, "temperature": 1.0, "top_p": 1.0,
                                          "top_k": 0, "max_new_tokens": 64, "seed": 0,
                                          "num_samples": 1, "batch_size": 16}
