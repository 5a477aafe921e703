"""The next token of each sequence: greedy, or sampled under temperature, top-k and top-p.

A sampled token is drawn by inverting the cumulative distribution with one uniform number from
the sequence's own random stream, seeded by (seed, prompt key, sample index). A sequence's
tokens therefore depend on its prompt and settings only, not on which other sequences share
its batch, how many prompts a run has done before, or the order prompts finish in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor

from prefalign.engine.sampling.settings import DecodeSettings


def sequence_generator(seed: int, key: str | int, sample: int) -> torch.Generator:
    """The random stream of one sequence: sample `sample` of the prompt known as `key`.

    The seed is hashed from all three (sha256), so neighbouring keys or samples do not get
    correlated streams."""
    digest = hashlib.sha256(f"{seed}\0{key}\0{sample}".encode()).digest()
    generator = torch.Generator()
    generator.manual_seed(int.from_bytes(digest[:8], "little") >> 1)  # manual_seed takes < 2**63
    return generator


def choose_tokens(logits: Tensor, settings: DecodeSettings,
                  generators: Sequence[torch.Generator] = ()) -> Tensor:
    """The next token id of each row of `logits` (B, V) float32: argmax when greedy, else a
    draw from the cut distribution using one number from each row's generator. Returns (B,)."""
    if not settings.do_sample:
        return logits.argmax(dim=-1)
    if len(generators) != logits.shape[0]:
        raise ValueError(f"choose_tokens: {logits.shape[0]} rows but {len(generators)} generators")
    uniforms = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators])
    probs, token_ids = candidate_probs(logits, settings)  # (B, K), (B, K) or None
    cdf = probs.double().cumsum(dim=-1)  # (B, K)
    targets = (uniforms * cdf[:, -1])[:, None]  # (B, 1), in [0, total)
    # The first index whose cumulative probability exceeds the target: token i is hit with
    # probability p_i, and a token cut to zero probability can never be.
    picks = torch.searchsorted(cdf, targets, right=True).clamp_(max=cdf.shape[1] - 1)  # (B, 1)
    if token_ids is None:
        return picks[:, 0]
    return token_ids.gather(1, picks)[:, 0]


def candidate_probs(logits: Tensor, settings: DecodeSettings) -> tuple[Tensor, Tensor | None]:
    """Probabilities of the candidate tokens after temperature, top-k and top-p, (B, K), with
    the vocabulary ids they stand for (B, K), or None when K is the whole vocabulary in order.
    Cut tokens keep probability 0; the rest are not renormalised (the draw scales to the sum).

    With top-k the candidates are the k best (torch.topk, sorted), so top-p sorts only k values;
    top-p alone sorts the vocabulary; neither cut needs no sort at all."""
    scaled = logits / settings.temperature  # (B, V)
    vocabulary = scaled.shape[-1]
    if 0 < settings.top_k < vocabulary:
        values, token_ids = scaled.topk(settings.top_k, dim=-1)  # (B, k), descending
    elif settings.top_p < 1:
        values, token_ids = scaled.sort(dim=-1, descending=True)  # (B, V)
    else:
        return scaled.softmax(dim=-1), None
    probs = values.softmax(dim=-1)  # (B, K)
    if settings.top_p < 1:
        # Keep a token while the tokens above it hold less than top_p: the smallest set that
        # reaches top_p, at least the most likely token (transformers' TopPLogitsWarper).
        above = probs.cumsum(dim=-1) - probs  # (B, K)
        probs = probs.masked_fill(above >= settings.top_p, 0.0)
    return probs, token_ids
