"""Sampling from a causal LM: N responses per prompt from one prefill, a batch that finished
sequences leave, per-sequence seeded random streams (see `decode` for the schedule)."""

from prefalign.engine.sampling.decode import Sample, sample_prompts
from prefalign.engine.sampling.settings import DecodeSettings

__all__ = ["DecodeSettings", "Sample", "sample_prompts"]
