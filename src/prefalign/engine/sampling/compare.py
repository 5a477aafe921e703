"""The transformers `generate` settings that decode as `DecodeSettings` say, for comparing the
sampler with `model.generate` (tests of greedy equality, `benchmarks/bench_generate.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prefalign.engine.sampling.settings import DecodeSettings

if TYPE_CHECKING:
    from transformers import GenerationConfig


def generation_config(settings: DecodeSettings, stop_ids: Sequence[int],
                      pad_id: int) -> GenerationConfig:
    """Every knob that can change the tokens is set, so neither a model's own
    generation_config.json (a repetition penalty, say) nor transformers' default top_k=50
    decodes differently from the settings; sampling-only knobs are left out when greedy (so
    transformers does not warn about them). num_return_sequences = settings.num_samples."""
    from transformers import GenerationConfig

    knobs: dict[str, Any] = dict(
        do_sample=settings.do_sample, num_beams=1, max_new_tokens=settings.max_new_tokens,
        min_new_tokens=0, repetition_penalty=1.0, no_repeat_ngram_size=0, use_cache=True,
        num_return_sequences=settings.num_samples, eos_token_id=list(stop_ids),
        pad_token_id=pad_id,
    )
    if settings.do_sample:
        knobs.update(temperature=settings.temperature, top_p=settings.top_p,
                     top_k=settings.top_k, min_p=0.0, typical_p=1.0, epsilon_cutoff=0.0,
                     eta_cutoff=0.0)
    return GenerationConfig(**knobs)
