"""Sample N responses per prompt with a KV cache: each prompt is prefilled once and its cache
serves all N samples; finished sequences leave the batch and waiting prompts take their place.
The tokens all prompts start with (the template's system turn, say) are run once for the job.

Prompts go longest first (similar lengths share a prefill, and a memory problem shows at once).
The batch holds at most `settings.rows` sequences. Between steps, ended rows are dropped once
they are a sixteenth of the batch, and when an eighth of the batch is free, as many waiting
prompts as fit are prefilled together and joined to the running rows (both copy the cache,
hence the thresholds). A prompt's samples are handed back as soon as all of them have ended.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from prefalign.engine.sampling.batch import LiveBatch, ModelCall, Row, SharedPrefix, TokenCallback
from prefalign.engine.sampling.settings import DecodeSettings

_COMPACT_SHARE = 16  # drop ended rows once they are 1/16 of the batch
_ADMIT_SHARE = 8  # take in new prompts once 1/8 of the batch is free


@dataclass(frozen=True)
class Sample:
    """One sampled response: sample `sample` of prompt `prompt` (its index in the prompts
    given), its token ids (ending with the stop token when one was generated), and why it
    ended: "end_of_turn" (a stop token) or "length" (max_new_tokens)."""

    prompt: int
    sample: int
    token_ids: tuple[int, ...]
    finish_reason: str


def sample_prompts(model: nn.Module, prompt_ids: Sequence[Sequence[int]],
                   settings: DecodeSettings, stop_ids: Sequence[int], *, pad_id: int,
                   keys: Sequence[str | int] | None = None,
                   on_token: TokenCallback | None = None) -> Iterator[list[Sample]]:
    """Yield each prompt's `settings.num_samples` samples (in sample order) as soon as they
    have all ended; prompts come in the order they finish.

    prompt_ids: each prompt's token ids (the rendered chat, assistant header open).
    keys: what seeds each prompt's random streams with settings.seed (default: its index), so
    a prompt keeps its samples when others are added, removed or already done.
    on_token: called with (prompt, sample, token id) for every token as it is chosen.
    The model should be in eval mode; decoding runs under torch.inference_mode.
    """
    if any(len(ids) == 0 for ids in prompt_ids):
        raise ValueError("sample_prompts: every prompt needs at least one token")
    keys = list(range(len(prompt_ids))) if keys is None else list(keys)
    if len(keys) != len(prompt_ids):
        raise ValueError(f"sample_prompts: {len(prompt_ids)} prompts but {len(keys)} keys")
    job = _Job(ModelCall(model), prompt_ids, keys, settings, frozenset(stop_ids), pad_id)
    with torch.inference_mode():
        yield from job.run(on_token)


class _Job:
    def __init__(self, call: ModelCall, prompt_ids: Sequence[Sequence[int]],
                 keys: Sequence[str | int], settings: DecodeSettings, stop_ids: frozenset[int],
                 pad_id: int) -> None:
        self.call, self.prompt_ids, self.keys = call, prompt_ids, keys
        self.settings, self.stop_ids, self.pad_id = settings, stop_ids, pad_id
        order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
        self.waiting = deque(order)
        self.ended: dict[int, list[Sample]] = {}
        self.prefix = SharedPrefix.of(prompt_ids, call.config)

    def run(self, on_token: TokenCallback | None) -> Iterator[list[Sample]]:
        batch: LiveBatch | None = None
        while self.waiting or (batch is not None and batch.live):
            batch = self._refill(batch)
            for row in batch.choose(self.settings, self.stop_ids, on_token):
                done = self._record(row)
                if done is not None:
                    yield done
            if batch.live:
                batch.forward(self.call)

    def _refill(self, batch: LiveBatch | None) -> LiveBatch:
        """Drop ended rows and take in waiting prompts where the thresholds say so."""
        n, rows = self.settings.num_samples, self.settings.rows
        if batch is None or not batch.live:
            return self._prefill(self.settings.batch_size)
        live = len(batch.live)
        free = rows - live
        admit = bool(self.waiting) and batch.cache.mergeable and free >= max(n, rows // _ADMIT_SHARE)
        ended = len(batch.rows) - live
        if ended and (admit or ended >= max(1, rows // _COMPACT_SHARE)):
            batch.compact()
        if admit:
            batch.append(self._prefill(free // n))
        return batch

    def _prefill(self, count: int) -> LiveBatch:
        chosen = [self.waiting.popleft() for _ in range(min(count, len(self.waiting)))]
        prompts = [(i, self.prompt_ids[i]) for i in chosen]
        return LiveBatch.prefill(self.call, prompts, self.keys, self.settings, self.pad_id,
                                 self.prefix)

    def _record(self, row: Row) -> list[Sample] | None:
        """Keep an ended row's sample; all of its prompt's samples once the last has ended."""
        samples = self.ended.setdefault(row.prompt, [])
        samples.append(Sample(row.prompt, row.sample, tuple(row.tokens),
                              row.finish_reason or ""))
        if len(samples) < self.settings.num_samples:
            return None
        del self.ended[row.prompt]
        return sorted(samples, key=lambda sample: sample.sample)
