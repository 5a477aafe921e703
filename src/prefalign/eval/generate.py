"""Batched generation with a KV cache under recorded decoding settings (greedy or sampling).

Prompts are rendered with the tokenizer's chat template (open assistant header), sorted by
length into batches so little padding is wasted, left-padded (a decoder continues from the last
position of every row), generated with `model.generate(use_cache=True)` until the template's
end-of-turn token (ChatML: `<|im_end|>`) or the eos token, then returned in input order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from prefalign.data.template import batch_token_ids, end_of_turn_token_id, render_prompt
from prefalign.data.types import Message

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class DecodeSettings:
    """How responses are decoded. do_sample=False is greedy (temperature and top_p unused).
    temperature > 0 and 0 < top_p <= 1 shape sampling (no top-k: every token may be drawn);
    max_new_tokens caps each response; seed seeds torch once per `generate` call; batch_size is
    the number of prompts decoded together."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        _check(isinstance(self.do_sample, bool), "do_sample", "must be true or false")
        _check(_is_number(self.temperature) and 0 < self.temperature < math.inf, "temperature",
               "must be a positive number (use do_sample: false for greedy decoding)")
        _check(_is_number(self.top_p) and 0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        _check(_is_int(self.max_new_tokens) and self.max_new_tokens >= 1, "max_new_tokens",
               "must be an integer >= 1")
        _check(_is_int(self.seed) and 0 <= self.seed < 2**63, "seed",
               "must be an integer >= 0")
        _check(_is_int(self.batch_size) and self.batch_size >= 1, "batch_size",
               "must be an integer >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ValueError(f"decoding.{field}: {message}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Generation:
    """One decoded response. response_ids end with the stop token when one was generated (no
    padding after it); num_tokens = len(response_ids); hit_max: stopped by max_new_tokens
    without a stop token; text: the response decoded with special tokens removed."""

    text: str
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    num_tokens: int
    hit_max: bool


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The template's end-of-turn token, then the eos token when it differs."""
    ids = [end_of_turn_token_id(tokenizer)]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def generation_config(settings: DecodeSettings, stop_ids: Sequence[int],
                      pad_id: int) -> GenerationConfig:
    """Every knob that can change the tokens is set here, so neither a model's own
    generation_config.json (e.g. a repetition penalty) nor transformers' default top_k=50
    changes what the recorded settings say; sampling-only knobs are left out when greedy (so
    transformers does not warn about them)."""
    from transformers import GenerationConfig

    knobs: dict[str, Any] = dict(
        do_sample=settings.do_sample, num_beams=1, max_new_tokens=settings.max_new_tokens,
        min_new_tokens=0, repetition_penalty=1.0, no_repeat_ngram_size=0, use_cache=True,
        num_return_sequences=1, eos_token_id=list(stop_ids), pad_token_id=pad_id,
    )
    if settings.do_sample:
        knobs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0,
                     min_p=0.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0)
    return GenerationConfig(**knobs)


def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
             prompts: Sequence[Sequence[Message]], settings: DecodeSettings, *,
             desc: str | None = None) -> list[Generation]:
    """Decode one response per prompt (each a chat ending with a user turn), in input order.

    torch is seeded once with settings.seed, so the same model, prompts and settings give the
    same responses; with sampling, a prompt's response also depends on the others in the call
    (they share the random stream). The model should be in eval mode.
    """
    stop_ids = stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    config = generation_config(settings, stop_ids, pad_id)
    prompt_ids = batch_token_ids(tokenizer, [render_prompt(tokenizer, p) for p in prompts])
    # Longest first: similar lengths share a batch, and a memory problem shows up at once.
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    results: list[Generation | None] = [None] * len(prompt_ids)
    torch.manual_seed(settings.seed)
    with tqdm(total=len(order), desc=desc, unit="prompt", dynamic_ncols=True) as bar:
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            responses = _generate_batch(model, [prompt_ids[i] for i in batch], config, pad_id)
            for i, response in zip(batch, responses, strict=True):
                results[i] = _as_generation(tokenizer, prompt_ids[i], response, stop_ids,
                                            settings.max_new_tokens)
            bar.update(len(batch))
    return [result for result in results if result is not None]


def _generate_batch(model: PreTrainedModel, prompt_ids: Sequence[Sequence[int]],
                    config: GenerationConfig, pad_id: int) -> list[list[int]]:
    """New token ids of each prompt (padding after a stop token included; trimmed later)."""
    width = max(len(ids) for ids in prompt_ids)
    device = next(model.parameters()).device
    input_ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)  # (B, T)
    for row, ids in enumerate(prompt_ids):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids.to(device),
                                attention_mask=attention_mask.to(device),
                                generation_config=config)  # (B, T + new)
    return output[:, width:].tolist()


def _as_generation(tokenizer: PreTrainedTokenizerBase, prompt_ids: Sequence[int],
                   new_ids: Sequence[int], stop_ids: Sequence[int],
                   max_new_tokens: int) -> Generation:
    """Cut the new ids after the first stop token; without one, the response hit the cap."""
    stops = set(stop_ids)
    end = next((i + 1 for i, token in enumerate(new_ids) if token in stops), None)
    response = list(new_ids[:end] if end is not None else new_ids[:max_new_tokens])
    return Generation(
        text=tokenizer.decode(response, skip_special_tokens=True),
        prompt_ids=tuple(prompt_ids),
        response_ids=tuple(response),
        num_tokens=len(response),
        hit_max=end is None,
    )
