"""One response per prompt under recorded decoding settings, through the engine's sampler.

Prompts are rendered with the tokenizer's chat template (open assistant header) and decoded by
`prefalign.engine.sampling.sample_prompts` (one prefill per prompt, finished responses leave
the batch) until the template's end-of-turn token (ChatML: `<|im_end|>`), the eos token or
`max_new_tokens`; results come back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from prefalign.data.template import batch_token_ids, render_prompt
from prefalign.data.types import Message
from prefalign.engine.sampling import DecodeSettings, sample_prompts
from prefalign.engine.sampling.batch import LENGTH
from prefalign.engine.sampling.tokens import pad_token_id, stop_token_ids

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["DecodeSettings", "Generation", "generate", "stop_token_ids"]


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


def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
             prompts: Sequence[Sequence[Message]], settings: DecodeSettings, *,
             desc: str | None = None) -> list[Generation]:
    """Decode one response per prompt (each a chat ending with a user turn), in input order.

    With sampling, prompt i's response is drawn from a random stream seeded by
    (settings.seed, i), so the same model, prompts and settings give the same responses
    whatever the batch size. The model should be in eval mode.
    """
    if settings.num_samples != 1:
        raise ValueError(f"decoding.num_samples: the evaluation decodes one response per "
                         f"prompt, got {settings.num_samples}")
    prompt_ids = batch_token_ids(tokenizer, [render_prompt(tokenizer, p) for p in prompts])
    results: list[Generation | None] = [None] * len(prompt_ids)
    with tqdm(total=len(prompt_ids), desc=desc, unit="prompt", dynamic_ncols=True) as bar:
        for (sample,) in sample_prompts(model, prompt_ids, settings, stop_token_ids(tokenizer),
                                        pad_id=pad_token_id(tokenizer)):
            results[sample.prompt] = Generation(
                text=tokenizer.decode(sample.token_ids, skip_special_tokens=True),
                prompt_ids=tuple(prompt_ids[sample.prompt]),
                response_ids=sample.token_ids,
                num_tokens=len(sample.token_ids),
                hit_max=sample.finish_reason == LENGTH,
            )
            bar.update(1)
    return [result for result in results if result is not None]
