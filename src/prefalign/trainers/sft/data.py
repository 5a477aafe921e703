"""SFT's training and evaluation splits: load conversations, tokenise, shuffle, limit.

As for DPO, a split is fixed before training: the training split is shuffled with the run seed
and cut to `data.limit_train`; positions in `SftSplit.tokenized` are what batches and
checkpoints refer to, and the fingerprint covers the kept conversations in that order and every
option that shaped them.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from prefalign.config import Config, ConfigError
from prefalign.data.conversation import Conversation
from prefalign.data.sft_load import SftLoadOptions, load_conversations
from prefalign.data.sft_tokenize import TokenizedConversation, tokenize_conversations
from prefalign.data.tokenizer import tokenizer_identity
from prefalign.engine.forward.sequences import collate_sequences

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

FINGERPRINT_VERSION = "prefalign-sft-v1"


@dataclass(frozen=True)
class SftSplit:
    """One split after every data decision: `conversations[i]` is what `tokenized[i]` encodes."""

    name: str
    conversations: list[Conversation]
    tokenized: list[TokenizedConversation]
    fingerprint: str
    counts: dict[str, int]
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokenized)

    def example_id(self, position: int) -> str:
        return self.tokenized[position].conversation_id

    def example_tokens(self, position: int) -> int:
        return len(self.tokenized[position].input_ids)

    def describe(self) -> dict[str, object]:
        return {"fingerprint": self.fingerprint, "counts": dict(self.counts),
                "warnings": list(self.warnings)}


def prepare_sft_splits(config: Config, tokenizer: PreTrainedTokenizerBase,
                       rejects_dir: Path | None = None) -> dict[str, SftSplit]:
    """{"train": ..., "eval": ...} ("eval" only when `data.eval` names sources)."""
    splits = {"train": _prepare(config, tokenizer, "train", config.data.train, rejects_dir)}
    if config.data.eval:
        splits["eval"] = _prepare(config, tokenizer, "eval", config.data.eval, rejects_dir)
    return splits


def _prepare(config: Config, tokenizer: PreTrainedTokenizerBase, name: str,
             sources: Sequence[str], rejects_dir: Path | None) -> SftSplit:
    data = config.data
    rejects = rejects_dir / f"{name}-rejects.jsonl" if rejects_dir is not None else None
    options = SftLoadOptions(format=None if data.format == "auto" else data.format,
                             on_error=data.on_error, rejects_path=rejects,
                             preference_axis=data.preference_axis)
    loaded = load_conversations(list(sources), options)
    result = tokenize_conversations(loaded.conversations, tokenizer,
                                    max_length=data.max_length, loss_on=config.sft.loss_on,
                                    on_overflow=data.on_overflow)
    by_id: dict[str, list[Conversation]] = {}
    for conversation in loaded.conversations:
        by_id.setdefault(conversation.conversation_id, []).append(conversation)
    conversations = [by_id[t.conversation_id].pop(0) for t in result.tokenized]
    order = list(range(len(result.tokenized)))
    limit = data.limit_train if name == "train" else data.limit_eval
    if name == "train":
        random.Random(config.run.seed).shuffle(order)
    counts = {"loaded": len(loaded.conversations), **result.counts}
    if limit is not None:
        counts["left_out_by_limit"] = max(0, len(order) - limit)
        order = order[:limit]
    if not order:
        raise ConfigError(f"data.{name}: no conversations left to use from {', '.join(sources)}")
    kept = [conversations[i] for i in order]
    tokenized = [result.tokenized[i] for i in order]
    counts.update(kept=len(order), target_tokens=sum(t.num_targets for t in tokenized))
    fingerprint = _fingerprint(tokenized, _options(config, tokenizer, name))
    return SftSplit(name, kept, tokenized, fingerprint, counts,
                    [*loaded.warnings, *result.warnings])


def _options(config: Config, tokenizer: PreTrainedTokenizerBase, name: str) -> dict[str, object]:
    data = config.data
    identity = {k: v for k, v in tokenizer_identity(tokenizer).items() if k != "name_or_path"}
    options: dict[str, object] = {"split": name, "max_length": data.max_length,
                                  "on_overflow": data.on_overflow, "tokenizer": identity,
                                  "loss_on": config.sft.loss_on}
    if name == "train":
        options.update(limit=data.limit_train, shuffle_seed=config.run.seed)
    else:
        options["limit"] = data.limit_eval
    return options


def _fingerprint(tokenized: Sequence[TokenizedConversation], options: dict[str, object]) -> str:
    """Hex sha256 over the options and every conversation's ids and labels, in order."""
    digest = hashlib.sha256(json.dumps({"version": FINGERPRINT_VERSION, "options": options},
                                       sort_keys=True, default=str).encode("utf-8"))
    for item in tokenized:
        digest.update(json.dumps([item.input_ids, item.labels]).encode("utf-8"))
    return digest.hexdigest()


def make_sft_batch(split: SftSplit, indices: torch.Tensor | Sequence[int],
                   pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask, labels (B, T), and "index" (B,)."""
    index = torch.as_tensor(indices, dtype=torch.long)  # (B,)
    items = [split.tokenized[i] for i in index.tolist()]
    batch = collate_sequences([(t.input_ids, t.labels) for t in items], pad_token_id)
    batch["index"] = index
    return batch
