"""compare_trl.py's sft and rm inputs: the examples of every step in prefalign's training order,
written for TRL as prefalign's exact token ids (and, for SFT, its loss mask), and their lengths.

SFT rows: `input_ids` and `completion_mask` (1 where prefalign's labels score the token, i.e.
the assistant turns and their end-of-turn tokens; 0 elsewhere). TRL's collator turns the mask
into labels (-100 where it is 0) and its causal LM shifts them, so both sides score the same
next-token predictions. RM rows: `chosen_input_ids` and `rejected_input_ids`, each the pair's
prompt followed by that reply, the two sequences prefalign's prefix-shared forward computes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from prefalign.config import Config, load_config
from prefalign.data.sft_tokenize import TokenizedConversation
from prefalign.data.tokenize import IGNORE_INDEX, TokenizedPair


def planned_conversations(overrides: list[str]) -> tuple[Config, list[TokenizedConversation]]:
    """The conversations of every optimiser step, in order, as prefalign's `sft` visits them."""
    from compare_trl_data import training_order
    from prefalign.data.tokenizer import load_tokenizer
    from prefalign.trainers.sft.data import prepare_sft_splits

    config = load_config(None, overrides)
    split = prepare_sft_splits(config, load_tokenizer(config.model.source))["train"]
    return config, [split.tokenized[i] for i in training_order(config, len(split))]


def completion_mask(labels: Sequence[int]) -> list[int]:
    """1 where a label scores the token (an assistant token), 0 where it is IGNORE_INDEX."""
    return [int(label != IGNORE_INDEX) for label in labels]


def sft_row(index: int, conversation: TokenizedConversation) -> dict[str, object]:
    return {"example_index": index, "input_ids": list(conversation.input_ids),
            "completion_mask": completion_mask(conversation.labels)}


def rm_row(index: int, pair: TokenizedPair) -> dict[str, object]:
    prompt = list(pair.prompt_ids)
    return {"example_index": index, "chosen_input_ids": prompt + list(pair.chosen_ids),
            "rejected_input_ids": prompt + list(pair.rejected_ids),
            "lengths": [len(prompt), len(pair.chosen_ids), len(pair.rejected_ids)]}


def write_rows(path: Path, rows: Sequence[dict[str, object]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def conversation_lengths(conversations: Sequence[TokenizedConversation],
                         batch_size: int) -> list[list[list[int]]]:
    """Per step, each conversation's [tokens, scored tokens] (scored: the positions whose next
    token carries a label, `num_targets`)."""
    lengths = [[len(c.input_ids), c.num_targets] for c in conversations]
    return [lengths[start : start + batch_size] for start in range(0, len(lengths), batch_size)]
