"""Before and after: the reference and the policy reply to the same conversations, side by side.

Loss curves and reward margins say how the log-probs moved; reading the replies says what the
model now does. The conversations are the prompts of preference pairs (system prompt and earlier
turns included), so a held-out set such as `bundled:tone-heldout` supplies them; a pair set whose
pairs share a prompt gives that prompt once. Each row keeps the pair's chosen reply as the written
example of the wanted answer. Replies are decoded greedily unless the settings say otherwise.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefalign.data.bundled import resolve_data_path
from prefalign.data.load import LoadOptions, load_pairs
from prefalign.data.types import Message
from prefalign.eval.generate import DecodeSettings, generate

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase

MODELS = ("reference", "policy")


@dataclass(frozen=True)
class Sample:
    """One conversation to answer: where it came from, its messages, the data's chosen reply."""

    id: str
    source: str
    messages: tuple[Message, ...]
    chosen: str


def load_samples(sources: Sequence[str], count: int, seed: int = 0) -> list[Sample]:
    """A seeded sample of `count` distinct prompts from the pairs of `sources` (bundled names or
    files), in file order; all of them when there are fewer. Invalid records raise DataError."""
    if count < 0:
        raise ValueError(f"samples: count must be >= 0, got {count}")
    distinct: dict[tuple[Message, ...], Sample] = {}
    for source in sources:
        for pair in load_pairs([resolve_data_path(source)], LoadOptions()).pairs:
            distinct.setdefault(pair.prompt, Sample(pair.provenance.pair_id, source,
                                                    pair.prompt, pair.chosen))
    samples = list(distinct.values())
    if count >= len(samples):
        return samples
    # random.Random seeded by a str hashes it with sha512: stable across runs and PYTHONHASHSEED.
    keep = sorted(random.Random(f"{seed}:samples").sample(range(len(samples)), count))
    return [samples[i] for i in keep]


def answer_samples(
    models: dict[str, nn.Module],
    tokenizer: PreTrainedTokenizerBase,
    samples: Sequence[Sample],
    settings: DecodeSettings,
) -> dict:
    """The `samples` section of eval.json: decoder settings and one row per sample with the
    conversation, the chosen reply and both models' replies (text, tokens, hit_max)."""
    conversations = [sample.messages for sample in samples]
    outputs = {name: generate(models[name], tokenizer, conversations, settings,
                              desc=f"samples ({name})") for name in MODELS}
    rows = []
    for i, sample in enumerate(samples):
        row = {"id": sample.id, "source": sample.source,
               "system": next((m.content for m in sample.messages if m.role == "system"), None),
               "history": [{"role": m.role, "content": m.content}
                           for m in sample.messages[:-1] if m.role != "system"],
               "prompt": sample.messages[-1].content, "chosen": sample.chosen}
        for name in MODELS:
            generation = outputs[name][i]
            row[f"{name}_response"] = generation.text
            row[f"{name}_tokens"] = generation.num_tokens
            row[f"{name}_hit_max"] = generation.hit_max
        rows.append(row)
    return {"decoding": settings.to_dict(), "n": len(rows), "rows": rows}
