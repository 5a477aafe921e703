"""Decoding settings: everything that decides which tokens a model samples, recorded with them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class DecodeSettings:
    """How responses are decoded.

    do_sample=False is greedy (argmax; temperature, top_k and top_p unused). With sampling,
    logits are divided by temperature (> 0), cut to the top_k most likely tokens (0: no cut),
    then to the smallest set of most likely tokens whose probability reaches top_p (1: no cut),
    in that order, as transformers' warpers do. max_new_tokens caps each response (the
    end-of-turn token included); seed with (prompt key, sample index) seeds each sequence's own
    random stream, so a sample does not depend on which others share its batch; num_samples
    responses are drawn per prompt; batch_size prompts' samples are decoded together at most.
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64
    seed: int = 0
    num_samples: int = 1
    batch_size: int = 16

    def __post_init__(self) -> None:
        _check(isinstance(self.do_sample, bool), "do_sample", "must be true or false")
        _check(_is_number(self.temperature) and 0 < self.temperature < math.inf, "temperature",
               "must be a positive number (use do_sample: false for greedy decoding)")
        _check(_is_number(self.top_p) and 0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        _check(_is_int(self.top_k) and self.top_k >= 0, "top_k",
               "must be an integer >= 0 (0: no top-k cut)")
        _check(_is_int(self.max_new_tokens) and self.max_new_tokens >= 1, "max_new_tokens",
               "must be an integer >= 1")
        _check(_is_int(self.seed) and 0 <= self.seed < 2**63, "seed",
               "must be an integer >= 0")
        _check(_is_int(self.num_samples) and self.num_samples >= 1, "num_samples",
               "must be an integer >= 1")
        _check(_is_int(self.batch_size) and self.batch_size >= 1, "batch_size",
               "must be an integer >= 1")

    @property
    def rows(self) -> int:
        """The most sequences decoded together: batch_size prompts times num_samples."""
        return self.batch_size * self.num_samples

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def token_settings(self) -> dict[str, Any]:
        """The settings that decide the tokens (batch_size only decides the speed)."""
        return {key: value for key, value in asdict(self).items() if key != "batch_size"}


def _check(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ValueError(f"decoding.{field}: {message}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
