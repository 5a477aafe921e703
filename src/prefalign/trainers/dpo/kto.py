"""KTO (`loss.name: kto`) on the shared loop: unpaired desirable / undesirable completions.

Each example is scored as a pseudo-pair so the DPO machinery (packed scorer, every reference
strategy, the precomputed cache) serves it unchanged: the "chosen" side is the example's own
completion, the "rejected" side the completion of its partner — the next example in the split's
order (the last one's partner is the first) — after the example's own prompt. The second side
is KTO's mismatched pair: its policy-minus-reference log-ratio, averaged over the micro-batch
and clamped at 0, is the reference point z0 (`kto_kl_reference`; detached, as in the paper).
Partners are fixed when the split is made, so a precomputed reference stays valid; z0 is
estimated per micro-batch on each process, as TRL estimates it per device batch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from prefalign.config import Config, ConfigError
from prefalign.data.bundled import resolve_data_path
from prefalign.data.fingerprint import fingerprint_pairs
from prefalign.data.tokenize import tokenize_pairs
from prefalign.data.types import PreferencePair
from prefalign.data.unpaired import UnpairedExample, load_unpaired
from prefalign.engine.forward.precision import policy_precision
from prefalign.losses import kto_kl_reference
from prefalign.trainers.dpo.data import TokenizedSplit, make_batch, truncation_options
from prefalign.trainers.dpo.method import DpoMethod
from prefalign.trainers.loop.method import Columns

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from prefalign.trainers.loop.run import Run

PAIR_TENSORS = ("chosen_input_ids", "chosen_attention_mask", "chosen_labels",
                "rejected_input_ids", "rejected_attention_mask", "rejected_labels")


@dataclass(frozen=True)
class KtoSplit(TokenizedSplit):
    """A DPO split of (own completion, partner's completion) pseudo-pairs and each one's label."""

    desirable: tuple[bool, ...] = ()


class KtoMethod(DpoMethod):
    """Kahneman–Tversky optimisation against a reference (Ethayarajh et al. 2024)."""

    name = "kto"
    unit = "examples"

    def __init__(self, config: Config):
        if config.data.length_balance:
            raise ConfigError("data.length_balance: KTO's examples have no rejected reply to "
                              "balance against; remove it")
        super().__init__(config)

    def prepare_splits(self, config: Config, tokenizer: PreTrainedTokenizerBase,
                       rejects_dir: Path | None) -> dict[str, KtoSplit]:
        splits = {"train": _prepare(config, tokenizer, "train", config.data.train)}
        if config.data.eval:
            splits["eval"] = _prepare(config, tokenizer, "eval", config.data.eval)
        return splits

    def make_batch(self, split: KtoSplit, indices: Tensor | Sequence[int],
                   pad_token_id: int) -> dict[str, Tensor]:
        batch = make_batch(split, indices, pad_token_id)
        batch["desirable"] = torch.tensor([split.desirable[i] for i in batch["index"].tolist()])
        return batch

    def forward(self, run: Run, scorer: nn.Module, batch: dict[str, Tensor],
                split: str) -> tuple[Tensor, Columns]:
        with policy_precision(run.config.train, batch["chosen_input_ids"].device):
            policy = scorer(**{name: batch[name] for name in PAIR_TENSORS})
        reference = self.reference.logps(batch, split)
        z0 = kto_kl_reference(policy.rejected.detach(), reference.rejected)
        output = self.loss(policy.chosen, reference.chosen, desirable=batch["desirable"],
                           kl_reference=z0)
        columns = {"losses": output.losses.detach(), "rewards": output.rewards,
                   "desirable": batch["desirable"].long(), "kl": z0.expand_as(output.losses),
                   "policy": policy.chosen.detach(), "reference": reference.chosen,
                   "tokens": policy.chosen_count, "index": batch["index"]}
        return output.losses, columns

    def train_metrics(self, columns: Columns) -> dict[str, float]:
        return kto_metrics(columns)

    def eval_metrics(self, run: Run, columns: Columns) -> dict[str, float]:
        return kto_metrics(columns)

    def identity_loss(self) -> float | None:
        return None  # λ/2 at policy = reference, but λ_D and λ_U may differ by example

    def manifest_sections(self, run: Run) -> dict[str, Any]:
        return {**super().manifest_sections(run), "kl_reference": "mismatched partner "
                "(next example in split order), mean per micro-batch, clamped at 0"}


def kto_metrics(columns: Columns) -> dict[str, float]:
    """loss; rewards (β·log π/π_ref) of desirable and undesirable examples; the reference point
    z0; label_accuracy: the fraction whose reward is on its label's side of z0 (desirable above,
    undesirable below); logps/change: mean policy − reference log-prob."""
    desirable = columns["desirable"].bool()
    rewards = columns["rewards"].double()
    kl = columns["kl"].double()
    metrics = {"loss": columns["losses"].double().mean().item(), "kl": kl.mean().item(),
               "label_accuracy": ((rewards > kl) == desirable).double().mean().item(),
               "logps/change": (columns["policy"].double()
                                - columns["reference"].double()).mean().item()}
    for name, chosen in (("desirable", desirable), ("undesirable", ~desirable)):
        if chosen.any():
            metrics[f"rewards/{name}"] = rewards[chosen].mean().item()
    return metrics


def _prepare(config: Config, tokenizer: PreTrainedTokenizerBase, name: str,
             sources: Sequence[str]) -> KtoSplit:
    data = config.data
    loaded = load_unpaired([resolve_data_path(s) for s in sources], data.on_error)
    examples = list(loaded.examples)
    if name == "train":
        random.Random(config.run.seed).shuffle(examples)
    limit = data.limit_train if name == "train" else data.limit_eval
    examples = examples[:limit] if limit is not None else examples
    if len(examples) < 2:
        raise ConfigError(f"data.{name}: KTO needs at least 2 examples (each is scored beside "
                          f"another's completion), got {len(examples)}")
    pairs = [_pseudo_pair(example, examples[(i + 1) % len(examples)])
             for i, example in enumerate(examples)]
    result = tokenize_pairs(pairs, tokenizer, truncation_options(config))
    if result.dropped:
        raise ConfigError(f"data.on_overflow: {len(result.dropped)} KTO example(s) exceed "
                          "data.max_length; dropping one would change its neighbour's partner: "
                          "use truncate or raise max_length")
    options = {"split": name, "method": "kto", "seed": config.run.seed, "limit": limit,
               "labels": [e.desirable for e in examples]}
    counts = {**loaded.counts, "kept": len(examples),
              "desirable": sum(e.desirable for e in examples)}
    return KtoSplit(name, pairs, result.pairs, fingerprint_pairs(pairs, options), counts,
                    [*loaded.warnings, *result.warnings], tuple(e.desirable for e in examples))


def _pseudo_pair(example: UnpairedExample, partner: UnpairedExample) -> PreferencePair:
    return PreferencePair(example.prompt, example.completion, partner.completion,
                          example.provenance)
