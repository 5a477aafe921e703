"""A reward model as a `Method` of the shared loop: a batch is a set of preference pairs, the
loss is Bradley–Terry over the scalar rewards of their two sides.

The model is the policy's decoder with a scalar head (engine/models/reward.py); each pair's
prompt is computed once for both sides (engine/forward/reward.py). Held-out metrics are
`engine.reward_metrics`: accuracy beside the length-only baseline and the length-balanced
accuracy. `final/` loads with `AutoModelForSequenceClassification.from_pretrained`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from prefalign.config import (
    Config,
    ConfigError,
    LossSection,
    ReferenceSection,
    SftSection,
)
from prefalign.engine.forward.precision import policy_precision
from prefalign.engine.forward.reward import RewardPairScorer
from prefalign.engine.forward.scorer import causal_lm_of
from prefalign.engine.models.load import LoadedModel
from prefalign.engine.models.reward import REWARD_HEAD, load_reward_model
from prefalign.engine.pair_splits import TokenizedSplit, make_batch, model_inputs, prepare_splits
from prefalign.engine.reward_metrics import reward_metrics
from prefalign.losses import bradley_terry_loss
from prefalign.trainers.loop.method import Columns, Method
from prefalign.trainers.rm.data import check_margin_fields, split_margins, with_margins

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from prefalign.trainers.loop.run import Run

LOSS_NAME = "bradley_terry"


class RmMethod(Method):
    """Bradley–Terry on a scalar reward head, with Llama 2's margin and reward centring."""

    name = "rm"
    unit = "pairs"

    def __init__(self, config: Config):
        check_rm_config(config)
        self.settings = config.rm
        self.margins: dict[str, Tensor] = {}

    def load_model(self, config: Config) -> LoadedModel:
        return load_reward_model(config.model, config.lora, seed=config.run.seed)

    def prepare_splits(self, config: Config, tokenizer: PreTrainedTokenizerBase,
                       rejects_dir: Path | None) -> dict[str, TokenizedSplit]:
        if self.settings.margin:  # before anything is tokenised
            check_margin_fields([*config.data.train, *config.data.eval])
        splits = prepare_splits(config, tokenizer, rejects_dir=rejects_dir)
        if self.settings.margin:
            self.margins = {name: split_margins(split) for name, split in splits.items()}
            splits = {name: with_margins(split, self.margins[name])
                      for name, split in splits.items()}
        return splits

    def build_scorer(self, model: nn.Module, config: Config) -> nn.Module:
        train = config.train
        return RewardPairScorer(model, packed=train.scorer == "packed",
                                attention_blocks=train.attention_blocks)

    def make_batch(self, split: TokenizedSplit, indices: Tensor | Sequence[int],
                   pad_token_id: int) -> dict[str, Tensor]:
        return make_batch(split, indices, pad_token_id)

    def forward(self, run: Run, scorer: nn.Module, batch: dict[str, Tensor],
                split: str) -> tuple[Tensor, Columns]:
        """Rewards of both sides (under `train.autocast`), then the per-pair BT loss."""
        index = batch["index"]
        with policy_precision(run.config.train, index.device):
            rewards = scorer(**model_inputs(dict(batch)))
        margin = None
        if split in self.margins:
            margin = self.margins[split][index.cpu()].to(rewards.chosen.device)
        losses = bradley_terry_loss(rewards.chosen, rewards.rejected, margin=margin,
                                    centering=self.settings.centering)
        return losses, {"losses": losses.detach(), "chosen_rewards": rewards.chosen.detach(),
                        "rejected_rewards": rewards.rejected.detach(),
                        "chosen_tokens": rewards.chosen_count,
                        "rejected_tokens": rewards.rejected_count, "index": index}

    def train_metrics(self, columns: Columns) -> dict[str, float]:
        return reward_train_metrics(columns)

    def eval_metrics(self, run: Run, columns: Columns) -> dict[str, float]:
        return reward_metrics(columns["chosen_rewards"], columns["rejected_rewards"],
                              columns["chosen_tokens"], columns["rejected_tokens"],
                              columns["losses"])

    def identity_loss(self) -> float | None:
        """ln 2 when r⁺ = r⁻, unless a margin or the centring term makes it depend on the pair."""
        plain = not self.settings.margin and self.settings.centering == 0
        return math.log(2.0) if plain else None

    def manifest_sections(self, run: Run) -> dict[str, Any]:
        config = causal_lm_of(run.loaded.model).config
        return {
            "loss": {"name": LOSS_NAME, "params": {"margin": self.settings.margin,
                                                   "centering": self.settings.centering}},
            "reward_model": {
                "head": REWARD_HEAD, "num_labels": 1,
                "pad_token_id": config.pad_token_id,
                "reward_token": "the last token whose id is not pad_token_id (transformers' "
                                "rule for sequence classification)",
                "head_init": f"N(0, 1/(hidden_size + 1)) from seed {run.config.run.seed}",
            },
        }


def reward_train_metrics(columns: Columns) -> dict[str, float]:
    """The logged summary of one step over the global batch (means over pairs)."""
    chosen, rejected = columns["chosen_rewards"].double(), columns["rejected_rewards"].double()
    return {
        "loss": columns["losses"].double().mean().item(),
        "rewards/accuracy": (chosen > rejected).double().mean().item(),
        "rewards/margin": (chosen - rejected).mean().item(),
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
    }


def check_rm_config(config: Config) -> None:
    """Sections a reward model does not use are refused rather than silently ignored."""
    if config.loss != LossSection():
        raise ConfigError("loss: a reward model trains on the Bradley–Terry loss and has no loss "
                          "section; remove it (see rm.margin and rm.centering)")
    if config.reference != ReferenceSection():
        raise ConfigError("reference: a reward model has no reference model; remove the "
                          "reference section")
    if config.sft != SftSection():
        raise ConfigError("sft: the sft section is for `prefalign sft`; remove it")
    if config.lora.enabled and not config.lora.merge_on_save:
        raise ConfigError("lora.merge_on_save: a reward model's final/ holds the merged model "
                          "(transformers cannot load a sequence-classification adapter onto its "
                          "base, which has no trained score head); set lora.merge_on_save: true")
