"""Supervised fine-tuning as a `Method` of the shared loop: a batch is a set of conversations,
the loss is the mean negative log-likelihood of their labelled (assistant) tokens.

L = −(1/T) Σ_conversations Σ_labelled tokens t log π(y_t | y_<t), T the labelled tokens of the
whole optimiser step over every process, so a long conversation weighs by its tokens (as
transformers' and TRL's SFT losses do) and the result does not depend on how the step is split
into micro-batches or processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from prefalign.config import Config, ConfigError, LossSection, ReferenceSection
from prefalign.engine.forward.precision import policy_precision
from prefalign.engine.forward.sequences import build_sequence_scorer
from prefalign.trainers.loop.method import Columns, Method
from prefalign.trainers.sft.data import SftSplit, make_sft_batch, prepare_sft_splits

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from prefalign.trainers.loop.run import Run


class SftMethod(Method):
    """Next-token likelihood of the assistant turns (all of them, or the last: `sft.loss_on`)."""

    name = "sft"
    unit = "conversations"

    def __init__(self, config: Config):
        check_sft_config(config)

    def prepare_splits(self, config: Config, tokenizer: PreTrainedTokenizerBase,
                       rejects_dir: Path | None) -> dict[str, SftSplit]:
        return prepare_sft_splits(config, tokenizer, rejects_dir)

    def build_scorer(self, model: nn.Module, config: Config) -> nn.Module:
        train = config.train
        return build_sequence_scorer(model, packed=train.scorer == "packed",
                                     chunk_size=train.logps_chunk_size,
                                     attention_blocks=train.attention_blocks,
                                     keep_mib=train.logps_keep_mib)

    def make_batch(self, split: SftSplit, indices: Tensor | Sequence[int],
                   pad_token_id: int) -> dict[str, Tensor]:
        return make_sft_batch(split, indices, pad_token_id)

    def forward(self, run: Run, scorer: nn.Module, batch: dict[str, Tensor],
                split: str) -> tuple[Tensor, Columns]:
        with policy_precision(run.config.train, batch["input_ids"].device):
            sums = scorer(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          labels=batch["labels"])
        losses = -sums.sum  # (B,) summed NLL per conversation
        return losses, {"losses": losses.detach(), "tokens": sums.count, "index": batch["index"]}

    def loss_divisor(self, run: Run, micro_batches: list[Tensor]) -> float:
        """T / W: the step's labelled tokens over every process, over the process count (DDP
        averages the processes' gradients, which makes the sum over all of them / T)."""
        split = run.splits["train"]
        mine = sum(split.tokenized[i].num_targets for part in micro_batches
                   for i in part.tolist())
        total = torch.tensor([float(mine)], device=run.accelerator.device)
        if run.accelerator.num_processes > 1:
            total = run.accelerator.reduce(total, reduction="sum")
        return max(total.item(), 1.0) / run.accelerator.num_processes

    def train_metrics(self, columns: Columns) -> dict[str, float]:
        return token_metrics(columns)

    def eval_metrics(self, run: Run, columns: Columns) -> dict[str, float]:
        return token_metrics(columns)


def token_metrics(columns: Columns) -> dict[str, float]:
    """loss: NLL per labelled token; perplexity: exp(loss); tokens: labelled tokens counted."""
    tokens = columns["tokens"].double().sum().item()
    loss = columns["losses"].double().sum().item() / max(tokens, 1.0)
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": tokens,
            "conversations": float(len(columns["losses"]))}


def check_sft_config(config: Config) -> None:
    """Sections and keys that SFT does not use are refused rather than silently ignored."""
    if config.loss != LossSection():
        raise ConfigError("loss: sft trains on the likelihood of the assistant turns and has no "
                          "loss section; remove it (see sft.loss_on)")
    if config.reference != ReferenceSection():
        raise ConfigError("reference: sft has no reference model; remove the reference section")
    data = config.data
    if data.length_balance:
        raise ConfigError("data.length_balance: balances chosen and rejected lengths of "
                          "preference pairs; sft has no rejected replies")
    if data.max_prompt_length is not None:
        raise ConfigError("data.max_prompt_length: sft truncates whole turns (earliest first); "
                          "set data.max_length only")
