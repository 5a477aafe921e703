"""A decoding batch: one row per sequence, its KV cache, attention mask and positions, and the
logits each live row's next token is chosen from.

Rows are left-padded so that every row's next token sits at the same cache position; each row
keeps its own position id (its count of real tokens), as transformers' generate does. A row
that finishes stays in the batch (its outputs ignored) until `compact` drops it, because
dropping rows copies the cache.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from prefalign.engine.forward.scorer import causal_lm_of
from prefalign.engine.sampling.cache import DecodeCache, left_pad
from prefalign.engine.sampling.choose import choose_tokens, sequence_generator
from prefalign.engine.sampling.settings import DecodeSettings

_MIN_SHARED = 4  # shorter common prefixes are not worth a separate forward
END_OF_TURN = "end_of_turn"
LENGTH = "length"
TokenCallback = Callable[[int, int, int], None]  # (prompt index, sample index, token id)


@dataclass
class Row:
    """One sequence: sample `sample` of prompt `prompt`, its tokens so far, why it ended."""

    prompt: int
    sample: int
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None


class ModelCall:
    """One forward of the model over new tokens with a cache; returns the last position's
    logits as float32 (B, V). Knows which keyword this transformers version takes for the cache
    and whether the model can skip the logits of earlier positions (`logits_to_keep`)."""

    def __init__(self, model: nn.Module) -> None:
        causal_lm = causal_lm_of(model)
        parameters = inspect.signature(causal_lm.forward).parameters
        self.model = model
        self.config = causal_lm.config
        self.device = next(model.parameters()).device
        self._cache_keyword = "cache" if "cache" in parameters else "past_key_values"
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}

    def __call__(self, input_ids: Tensor, mask: Tensor, positions: Tensor,
                 cache: DecodeCache) -> Tensor:
        output = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                            use_cache=True, **{self._cache_keyword: cache}, **self._last_only)
        return output.logits[:, -1].float()  # (B, V)


class SharedPrefix:
    """The leading tokens every prompt of a job shares (the chat template's system turn and user
    header, say: 24 of SmolLM2's 42 on the evaluation's prompts). They run through the model
    once; each prefill starts from a copy of their cache and runs only the tokens after them."""

    def __init__(self, token_ids: Sequence[int]) -> None:
        self.token_ids = list(token_ids)
        self._cache: DecodeCache | None = None

    @classmethod
    def of(cls, prompt_ids: Sequence[Sequence[int]], config: object) -> SharedPrefix | None:
        """The prompts' common prefix, when at least _MIN_SHARED tokens long and the model's
        cache can be copied; every prompt keeps one token of its own (its logits are needed)."""
        if not prompt_ids or not DecodeCache(config, reserve=0).mergeable:  # type: ignore[arg-type]
            return None
        common = os.path.commonprefix([list(ids) for ids in prompt_ids])
        length = min(len(common), min(len(ids) for ids in prompt_ids) - 1)
        return cls(common[:length]) if length >= _MIN_SHARED else None

    def cache(self, call: ModelCall) -> DecodeCache:
        """The prefix's cache (one row), computed on first use."""
        if self._cache is None:
            ids = torch.tensor([self.token_ids], device=call.device)  # (1, S)
            self._cache = DecodeCache(call.config, reserve=0)
            call(ids, torch.ones_like(ids), torch.arange(ids.shape[1], device=call.device)[None],
                 self._cache)
        return self._cache


class LiveBatch:
    """The rows decoded together; see the module docstring."""

    def __init__(self, rows: list[Row], cache: DecodeCache, mask: Tensor, positions: Tensor,
                 logits: Tensor) -> None:
        self.rows = rows
        self.cache = cache
        self.mask = mask  # (B, T) 1 at real tokens
        self.positions = positions  # (B, 1) position id of each row's next token
        self.logits = logits  # (B, V) float32: each row's next-token logits

    @classmethod
    def prefill(cls, call: ModelCall, prompts: Sequence[tuple[int, Sequence[int]]],
                keys: Sequence[str | int], settings: DecodeSettings, pad_id: int,
                prefix: SharedPrefix | None = None) -> LiveBatch:
        """One forward over the prompts (index, token ids), left-padded (after the shared
        prefix's cache when there is one: only the tokens after it run), then each prompt's
        cache row repeated for its num_samples samples."""
        shared = len(prefix.token_ids) if prefix is not None else 0
        input_ids, tail_mask = _left_padded([ids[shared:] for _, ids in prompts], pad_id)
        input_ids, tail_mask = input_ids.to(call.device), tail_mask.to(call.device)
        cache = DecodeCache(call.config, reserve=settings.max_new_tokens)
        if prefix is not None:
            cache.start_from(prefix.cache(call), len(prompts),
                             room=input_ids.shape[1] + settings.max_new_tokens)
        mask = torch.cat([tail_mask.new_ones((len(prompts), shared)), tail_mask], dim=1)
        # As transformers' generate: count real tokens; padding gets a harmless position 1.
        positions = (mask.cumsum(dim=-1) - 1).masked_fill_(mask == 0, 1)[:, shared:]  # (P, T)
        logits = call(input_ids, mask, positions, cache)  # (P, V)
        n = settings.num_samples
        if n > 1:
            cache.batch_repeat_interleave(n)
        rows = [Row(index, sample, _generator(settings, keys[index], sample))
                for index, _ in prompts for sample in range(n)]
        return cls(rows, cache, mask.repeat_interleave(n, dim=0),
                   (positions[:, -1:] + 1).repeat_interleave(n, dim=0),
                   logits.repeat_interleave(n, dim=0))

    @property
    def live(self) -> list[int]:
        return [i for i, row in enumerate(self.rows) if row.finish_reason is None]

    def choose(self, settings: DecodeSettings, stop_ids: frozenset[int],
               on_token: TokenCallback | None = None) -> list[Row]:
        """Choose and record every live row's next token; return the rows that ended."""
        live = self.live
        logits = self.logits if len(live) == len(self.rows) else self.logits[live]  # (L, V)
        generators = [self.rows[i].generator for i in live] if settings.do_sample else []
        tokens = choose_tokens(logits, settings, generators).tolist()  # type: ignore[arg-type]
        ended = []
        for i, token in zip(live, tokens, strict=True):
            row = self.rows[i]
            row.tokens.append(token)
            if on_token is not None:
                on_token(row.prompt, row.sample, token)
            if token in stop_ids:
                row.finish_reason = END_OF_TURN
            elif len(row.tokens) >= settings.max_new_tokens:
                row.finish_reason = LENGTH
            if row.finish_reason is not None:
                ended.append(row)
        return ended

    def forward(self, call: ModelCall) -> None:
        """Feed every row its last token (ended rows too: they are dropped later, not now)."""
        input_ids = torch.tensor([[row.tokens[-1]] for row in self.rows], device=call.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        self.logits = call(input_ids, self.mask, self.positions, self.cache)
        self.positions = self.positions + 1

    def compact(self) -> None:
        """Drop the ended rows, and the leading positions that are padding for every row left."""
        keep = self.live
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        mask = self.mask[index]
        # argmax finds each row's first real position; every row has one (its prompt).
        drop_left = int(mask.argmax(dim=1).min()) if self.cache.mergeable and keep else 0
        self.cache.select_rows(index, drop_left)
        self.rows = [self.rows[i] for i in keep]
        self.mask = mask[:, drop_left:]
        self.positions = self.positions[index]
        self.logits = self.logits[index]

    def append(self, other: LiveBatch) -> None:
        """Take in `other`'s rows (freshly prefilled prompts)."""
        self.cache.append_rows(other.cache)
        width = max(self.mask.shape[1], other.mask.shape[1])
        self.mask = torch.cat([left_pad(self.mask, width), left_pad(other.mask, width)])
        self.rows += other.rows
        self.positions = torch.cat([self.positions, other.positions])
        self.logits = torch.cat([self.logits, other.logits])


def _left_padded(token_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token ids (P, T) padded on the left with pad_id, and their mask (P, T), 1 at tokens."""
    width = max(len(ids) for ids in token_ids)
    input_ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for row, ids in enumerate(token_ids):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        mask[row, width - len(ids) :] = 1
    return input_ids, mask


def _generator(settings: DecodeSettings, key: str | int, sample: int) -> torch.Generator | None:
    return sequence_generator(settings.seed, key, sample) if settings.do_sample else None
