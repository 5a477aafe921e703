"""`--judge rm:RUN_DIR`: a reward model (`prefalign rm train`'s `final/`) scores each completion.

RUN_DIR/final (or RUN_DIR itself, when it is the model directory) must hold an
`AutoModelForSequenceClassification` with one label, its tokenizer and chat template, in
safetensors; remote code is never run. Each completion is rendered and tokenised exactly as DPO
tokenises a response (`judges.tokens`: prompt, response, end-of-turn token), truncated to the
run's `data.max_length` (the default 512 without a run manifest), and scored by the model's own
forward: the logit transformers reads at the last non-padding token. Batches are right-padded
with the model's pad token (one sequence at a time when its config has none), run in eval mode
without gradients, in float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from prefalign.config import config_from_dict
from prefalign.data.tokenize import DEFAULT_MAX_LENGTH, TruncationOptions
from prefalign.data.tokenizer import load_tokenizer
from prefalign.engine.manifest import MANIFEST, read_manifest
from prefalign.engine.models.load import check_safetensors_only, weight_hash
from prefalign.engine.models.runs import FINAL
from prefalign.judges.base import Completions, JudgeError
from prefalign.judges.tokens import tokenize_completion_pairs

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BATCH_SIZE = 8  # sequences per forward


@dataclass(frozen=True)
class RewardModelJudge:
    """A sequence-classification reward model; `hash` is its weight_hash."""

    id: str
    hash: str
    model: PreTrainedModel = field(repr=False)
    tokenizer: PreTrainedTokenizerBase = field(repr=False)
    truncation: TruncationOptions
    batch_size: int = BATCH_SIZE

    def score(self, completions: Completions) -> list[float]:
        pairs = [(i, i) for i in range(len(completions))]
        tokenized = tokenize_completion_pairs(self.tokenizer, completions, pairs, self.truncation)
        sequences = [pair.input_ids("chosen") for pair in tokenized]
        return score_sequences(self.model, sequences, self.batch_size)


def load_reward_model_judge(target: str) -> RewardModelJudge:
    """The judge `rm:TARGET` names (TARGET a run directory or a model directory)."""
    from transformers import AutoModelForSequenceClassification

    model_dir = _model_dir(Path(target))
    check_safetensors_only(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), dtype=torch.float32, trust_remote_code=False, use_safetensors=True)
    if model.config.num_labels != 1:
        raise JudgeError(f"judge rm:{target}: {model_dir} has {model.config.num_labels} labels; "
                         "a reward model has one (a scalar score)")
    model.requires_grad_(False)
    tokenizer = load_tokenizer(str(model_dir))
    return RewardModelJudge(f"rm:{target}", weight_hash(model), model.eval(), tokenizer,
                            _truncation(Path(target)))


def _model_dir(target: Path) -> Path:
    for candidate in (target / FINAL, target):
        if (candidate / "config.json").is_file():
            return candidate
    raise JudgeError(f"judge rm:{target}: no reward model there (expected {target / FINAL}/ or "
                     "a model directory with config.json)")


def _truncation(target: Path) -> TruncationOptions:
    """The reward model run's own length limits when it has a manifest (truncating, so every
    completion gets a score)."""
    if not (target / MANIFEST).is_file():
        return TruncationOptions(DEFAULT_MAX_LENGTH, None, "truncate")
    data = config_from_dict(read_manifest(target)["config"]).data
    return TruncationOptions(data.max_length, data.max_prompt_length, "truncate")


@torch.no_grad()
def score_sequences(model: PreTrainedModel, sequences: list[tuple[int, ...]],
                    batch_size: int) -> list[float]:
    """The model's scalar logit for each token sequence, in order; batches of similar length."""
    pad_id = model.config.pad_token_id
    size = batch_size if pad_id is not None else 1  # transformers needs a pad id to batch
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    scores = [0.0] * len(sequences)
    device = next(model.parameters()).device
    for start in range(0, len(order), size):
        batch = order[start : start + size]
        width = max(len(sequences[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad_id or 0, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
        for row, i in enumerate(batch):
            input_ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
            attention_mask[row, : len(sequences[i])] = 1
        logits = model(input_ids=input_ids.to(device),
                       attention_mask=attention_mask.to(device)).logits  # (B, 1)
        for row, i in enumerate(batch):
            scores[i] = float(logits[row, 0])
    return scores

