"""Preference-pair training and evaluation splits: load, tokenise, shuffle, length-balance, limit.

Shared by the trainers that learn from pairs (DPO and its relatives, KTO, reward models).

A split's pairs are fixed once, before training: `prepare_splits` loads every source, tokenises
with the chat template and truncation policy, and for the training split shuffles with the run
seed, optionally balances response lengths and keeps the first `limit_train` pairs. Positions in
`TokenizedSplit.tokenized` are the pair indices that batches, reference caches and checkpoints
refer to; the fingerprint covers the kept pairs in that order and every option that shaped them.

Loading and tokenising are skipped when the token cache (prefalign.data.token_cache) holds the
sources tokenised this way; the split then indexes memory-mapped arrays instead of lists, and the
steps after it are the same either way. The order in which batches visit a split is the shared
loop's (trainers/loop/batches.py).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from prefalign.config import Config, ConfigError
from prefalign.data.bundled import resolve_data_path
from prefalign.data.collate import collate_pairs
from prefalign.data.fingerprint import fingerprint_rows, pair_row
from prefalign.data.load import LoadOptions, load_pairs
from prefalign.data.token_arrays import CachedPairs, TokenizedPairs, take
from prefalign.data.token_cache import (
    CacheOutcome,
    TokenizedData,
    cached_tokenize,
    token_cache_key,
)
from prefalign.data.tokenize import TokenizedPair, TokenizeResult, TruncationOptions, tokenize_pairs
from prefalign.data.tokenizer import tokenizer_identity
from prefalign.data.types import PreferencePair

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class TokenizedSplit:
    """One split after every data decision: `pairs[i]` is the pair `tokenized[i]` encodes.

    Both are lists, or, from the token cache, read-only sequences that build each item from
    memory-mapped arrays when it is asked for (`prefalign.data.token_arrays`).

    counts: loaded, kept, dropped_overflow, prompt_truncated, response_truncated,
    chosen_shorter, chosen_longer, same_length (by response tokens, of the kept pairs), and
    left_out_by_balance / left_out_by_limit for the training split.
    """

    name: str
    pairs: Sequence[PreferencePair]
    tokenized: Sequence[TokenizedPair]
    fingerprint: str
    counts: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    # {"key", "hit"} of the token cache entry used (see prefalign.data.token_cache), or None
    token_cache: dict[str, object] | None = field(default=None, kw_only=True)

    def __len__(self) -> int:
        return len(self.tokenized)

    def example_id(self, position: int) -> str:
        return self.tokenized[position].pair_id

    def example_tokens(self, position: int) -> int:
        pair = self.tokenized[position]
        return len(pair.prompt_ids) + max(len(pair.chosen_ids), len(pair.rejected_ids))

    def describe(self) -> dict[str, object]:
        """What the manifest records about this split."""
        return {"fingerprint": self.fingerprint, "counts": dict(self.counts),
                "warnings": list(self.warnings), "token_cache": self.token_cache}


def prepare_splits(
    config: Config, tokenizer: PreTrainedTokenizerBase, rejects_dir: Path | None = None
) -> dict[str, TokenizedSplit]:
    """{"train": ..., "eval": ...} ("eval" only when `data.eval` names sources).

    rejects_dir: with `data.on_error: skip`, invalid records go to `<split>-rejects.jsonl` there.
    Raises ConfigError when a split ends up empty.
    """
    splits = {"train": _prepare(config, tokenizer, "train", config.data.train, rejects_dir)}
    if config.data.eval:
        splits["eval"] = _prepare(config, tokenizer, "eval", config.data.eval, rejects_dir)
    return splits


def truncation_options(config: Config) -> TruncationOptions:
    data = config.data
    return TruncationOptions(data.max_length, data.max_prompt_length, data.on_overflow)


def _prepare(
    config: Config,
    tokenizer: PreTrainedTokenizerBase,
    name: str,
    sources: Sequence[str],
    rejects_dir: Path | None,
) -> TokenizedSplit:
    data = config.data
    rejects = rejects_dir / f"{name}-rejects.jsonl" if rejects_dir is not None else None
    paths = [resolve_data_path(s) for s in sources]
    loaded, cache = _tokenized_data(config, tokenizer, paths, rejects)
    counts, warnings = dict(loaded.counts), list(loaded.warnings)
    order = list(range(len(loaded.tokenized)))
    if name == "train":
        order = _train_order(order, loaded.tokenized, config, counts, warnings)
    elif data.limit_eval is not None:
        counts["left_out_by_limit"] = max(0, len(order) - data.limit_eval)
        order = order[: data.limit_eval]
    if not order:
        raise ConfigError(f"data.{name}: no pairs left to use from {', '.join(sources)} "
                          f"({loaded.summary}; {counts['dropped_overflow']} dropped as "
                          "over-length)")
    kept_pairs = take(loaded.pairs, order)
    kept_tokens = take(loaded.tokenized, order)
    counts.update(kept=len(order), **length_groups(kept_tokens))
    fingerprint = fingerprint_rows(_pair_rows(kept_pairs),
                                   _fingerprint_options(config, tokenizer, name))
    return TokenizedSplit(name, kept_pairs, kept_tokens, fingerprint, counts, warnings,
                          token_cache=cache.describe() if cache is not None else None)


def _tokenized_data(
    config: Config, tokenizer: PreTrainedTokenizerBase, paths: list[Path], rejects: Path | None
) -> tuple[TokenizedData, CacheOutcome | None]:
    """Loaded and tokenised pairs, from the token cache when `data.cache_tokenized` allows."""
    data = config.data
    load = LoadOptions(data.format, data.on_error, data.preference_axis)
    truncation = truncation_options(config)
    build = partial(_load_and_tokenize, paths, load, tokenizer, truncation)
    key = None
    if data.cache_tokenized:
        keeps_rejects = load.on_error == "skip" and rejects is not None
        key = token_cache_key(paths, load, tokenizer, truncation, keeps_rejects)
    if key is None:
        return build(rejects), None
    return cached_tokenize(key, build, rejects)


def _load_and_tokenize(
    paths: list[Path], load: LoadOptions, tokenizer: PreTrainedTokenizerBase,
    truncation: TruncationOptions, rejects: Path | None,
) -> TokenizedData:
    loaded = load_pairs(paths, load, rejects_path=rejects)
    result = tokenize_pairs(loaded.pairs, tokenizer, truncation)
    counts = {"loaded": len(loaded.pairs), "dropped_overflow": len(result.dropped),
              "prompt_truncated": result.counts["prompt_truncated"],
              "response_truncated": result.counts["response_truncated"]}
    return TokenizedData(_kept_pairs(loaded.pairs, result, truncation), result.pairs, counts,
                         [*loaded.warnings, *result.warnings], loaded.summary())


def _pair_rows(pairs: Sequence[PreferencePair]) -> Iterable[bytes]:
    """Each pair's fingerprint row; cached pairs give theirs as stored, without decoding."""
    return pairs.fingerprint_rows() if isinstance(pairs, CachedPairs) else map(pair_row, pairs)


def _kept_pairs(
    pairs: list[PreferencePair], result: TokenizeResult, truncation: TruncationOptions
) -> list[PreferencePair]:
    """The input pairs that survived tokenisation, aligned with `result.pairs`.

    tokenize_pairs keeps order and names the dropped pair ids. Pair ids can repeat (a data set
    may reuse record ids), so when one id is both the next kept and the next dropped, the pair's
    untruncated token count (`result.lengths`) decides: over max_length means it was dropped.
    """
    kept: list[PreferencePair] = []
    next_kept, next_dropped = 0, 0
    for pair, (prompt, chosen, rejected) in zip(pairs, result.lengths, strict=True):
        pair_id = pair.provenance.pair_id
        is_kept = next_kept < len(result.pairs) and result.pairs[next_kept].pair_id == pair_id
        is_dropped = next_dropped < len(result.dropped) and result.dropped[next_dropped] == pair_id
        if is_kept and is_dropped:
            is_kept = prompt + max(chosen, rejected) <= truncation.max_length
        if is_kept:
            kept.append(pair)
            next_kept += 1
        elif is_dropped:
            next_dropped += 1
    if len(kept) != len(result.pairs):
        raise RuntimeError("could not align tokenised pairs with their source pairs")
    return kept


def _train_order(
    order: list[int],
    tokenized: Sequence[TokenizedPair],
    config: Config,
    counts: dict[str, int],
    warnings: list[str],
) -> list[int]:
    """Shuffle with the run seed, then balance lengths and limit (see `length_balance`)."""
    data = config.data
    shuffled = list(order)
    random.Random(config.run.seed).shuffle(shuffled)
    if data.length_balance:
        signs = length_signs(take(tokenized, shuffled))
        balanced = len(length_balance(signs))
        kept_positions = length_balance(signs, data.limit_train)
        counts["left_out_by_balance"] = len(shuffled) - balanced
        counts["left_out_by_limit"] = balanced - len(kept_positions)
        if counts["left_out_by_balance"]:
            warnings.append(f"length_balance: left out {counts['left_out_by_balance']} of "
                            f"{len(shuffled)} training pairs so that the chosen reply is the "
                            "shorter as often as the longer")
        return [shuffled[p] for p in kept_positions]
    if data.limit_train is not None:
        counts["left_out_by_limit"] = max(0, len(shuffled) - data.limit_train)
        shuffled = shuffled[: data.limit_train]
    return shuffled


def length_sign(pair: TokenizedPair) -> int:
    """-1 when the chosen response has fewer tokens than the rejected, +1 more, 0 equal."""
    difference = len(pair.chosen_ids) - len(pair.rejected_ids)
    return (difference > 0) - (difference < 0)


def length_signs(tokenized: Sequence[TokenizedPair]) -> list[int]:
    """length_sign of each pair; cached pairs answer from their stored bounds, undecoded."""
    if isinstance(tokenized, TokenizedPairs):
        return tokenized.length_signs()
    return [length_sign(p) for p in tokenized]


def length_groups(tokenized: Sequence[TokenizedPair]) -> dict[str, int]:
    signs = length_signs(tokenized)
    return {"chosen_shorter": signs.count(-1), "chosen_longer": signs.count(1),
            "same_length": signs.count(0)}


def length_balance(signs: Sequence[int], limit: int | None = None) -> list[int]:
    """Positions to keep so that as many pairs have the chosen reply shorter (-1) as longer (+1).

    The i-th shorter pair is coupled with the i-th longer pair (in the given, shuffled order);
    uncoupled pairs of the larger group are left out. Equal-length pairs (0) carry no length
    signal and are all kept. With `limit`, units (a couple, or one equal-length pair) are taken
    in order of their first position until the next would exceed it, so the result is exactly
    balanced and holds `limit` or `limit - 1` pairs. Kept positions come back in their order.
    """
    shorter = [i for i, s in enumerate(signs) if s < 0]
    longer = [i for i, s in enumerate(signs) if s > 0]
    units = [(min(a, b), (a, b)) for a, b in zip(shorter, longer, strict=False)]
    units += [(i, (i,)) for i, s in enumerate(signs) if s == 0]
    kept: list[int] = []
    for _, members in sorted(units):
        if limit is not None and len(kept) >= limit:
            break
        if limit is not None and len(kept) + len(members) > limit:
            continue  # a couple does not fit the last slot; a later equal-length pair may
        kept.extend(members)
    return sorted(kept)


def _fingerprint_options(
    config: Config, tokenizer: PreTrainedTokenizerBase, name: str
) -> dict[str, object]:
    data = config.data
    options: dict[str, object] = {
        "split": name,
        "truncation": {"max_length": data.max_length, "max_prompt_length": data.max_prompt_length,
                       "on_overflow": data.on_overflow},
        # Not its path: the same tokenizer moved elsewhere gives the same token ids.
        "tokenizer": {k: v for k, v in tokenizer_identity(tokenizer).items()
                      if k != "name_or_path"},
    }
    if name == "train":
        options.update(length_balance=data.length_balance, limit=data.limit_train,
                       shuffle_seed=config.run.seed)
    else:
        options["limit"] = data.limit_eval
    return options


def make_batch(
    split: TokenizedSplit, indices: torch.Tensor | Sequence[int], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """collate_pairs of those pairs, plus "index" (B,) int64: their positions in the split."""
    index = torch.as_tensor(indices, dtype=torch.long)  # (B,)
    batch = collate_pairs([split.tokenized[i] for i in index.tolist()], pad_token_id)
    batch["index"] = index
    return batch


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The six tensors PairScorer takes (everything but "index")."""
    return {key: value for key, value in batch.items() if key != "index"}
