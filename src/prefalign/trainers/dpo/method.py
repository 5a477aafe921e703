"""DPO and its relatives as a `Method` of the shared loop: a batch is a set of preference pairs,
the loss is the configured preference loss over the policy's and the reference's log-probs.

Reference-free losses (SimPO, ORPO) have no reference to measure log-prob changes against, so
the policy's own held-out log-probs at step 0 stand in (see `initial_eval_logps`).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from prefalign.config import ConfigError, RmSection, SftSection
from prefalign.engine.checked_tensors import read_checked, write_checked
from prefalign.engine.forward.precision import policy_precision
from prefalign.engine.forward.select import build_scorer
from prefalign.engine.metrics import PairRecords, eval_metrics
from prefalign.engine.models.load import load_reference_model
from prefalign.losses import ConfiguredLoss, LossOutput, PairLogps, make_loss
from prefalign.trainers.dpo.data import TokenizedSplit, make_batch, model_inputs, prepare_splits
from prefalign.trainers.dpo.reference import Reference, build_reference
from prefalign.trainers.loop.health import identity_loss
from prefalign.trainers.loop.heldout import INITIAL_LOGPS, INITIAL_NAMES, score_heldout
from prefalign.trainers.loop.method import Columns, Method

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from prefalign.config import Config
    from prefalign.engine.models.load import LoadedModel
    from prefalign.trainers.loop.run import Run

_RECORD_FIELDS = tuple(PairRecords.__dataclass_fields__)


class DpoMethod(Method):
    """Preference optimisation against a reference (or none, for reference-free losses)."""

    name = "dpo"
    unit = "pairs"

    def __init__(self, config: Config):
        if config.sft != SftSection():
            raise ConfigError("sft: the sft section is for `prefalign sft`; remove it from a "
                              "preference-training config")
        if config.rm != RmSection():
            raise ConfigError("rm: the rm section is for `prefalign rm train`; remove it from a "
                              "DPO config")
        self.loss: ConfiguredLoss = make_loss(config.loss.name, **config.loss.params)
        self.reference: Reference = Reference()
        self.initial_eval: PairLogps | None = None

    def prepare_splits(self, config: Config, tokenizer: PreTrainedTokenizerBase,
                       rejects_dir: Path | None) -> dict[str, TokenizedSplit]:
        return prepare_splits(config, tokenizer, rejects_dir=rejects_dir)

    def build_scorer(self, model: nn.Module, config: Config) -> nn.Module:
        return build_scorer(model, config.train)

    def attach(self, config: Config, loaded: LoadedModel, scorer: nn.Module,
               splits: dict[str, TokenizedSplit], accelerator: Any) -> None:
        self.reference = build_reference(config, loaded, scorer, splits, accelerator)

    def start(self, run: Run, resuming: bool) -> None:
        if "eval" in run.splits and not self.loss.needs_reference:
            self.initial_eval = initial_eval_logps(run, resuming)

    def make_batch(self, split: TokenizedSplit, indices: Tensor | Sequence[int],
                   pad_token_id: int) -> dict[str, Tensor]:
        return make_batch(split, indices, pad_token_id)

    def forward(self, run: Run, scorer: nn.Module, batch: dict[str, Tensor],
                split: str) -> tuple[Tensor, Columns]:
        """Policy log-probs (through `scorer`, under `train.autocast`), reference log-probs
        (under it only with `reference.precision: policy`) and the configured loss."""
        device = batch["chosen_input_ids"].device
        with policy_precision(run.config.train, device):
            policy = scorer(**model_inputs(dict(batch)))
        reference = self.reference.logps(batch, split)
        output = self.loss(policy, reference)
        return output.losses, batch_columns(output, policy, reference, batch["index"])

    def train_metrics(self, columns: Columns) -> dict[str, float]:
        return pair_train_metrics(columns)

    def eval_metrics(self, run: Run, columns: Columns) -> dict[str, float]:
        if "reference_chosen" not in columns and self.initial_eval is not None:
            columns = {**columns, "reference_chosen": self.initial_eval.chosen,
                       "reference_rejected": self.initial_eval.rejected}
        return eval_metrics(records_of(columns))

    def identity_loss(self) -> float | None:
        return identity_loss(self.loss)

    def manifest_sections(self, run: Run) -> dict[str, Any]:
        return {"reference": self.reference.describe(),
                "loss": {"name": self.loss.name, "params": dict(self.loss.params)}}


def batch_columns(
    output: LossOutput, policy: PairLogps, reference: PairLogps | None, index: Tensor
) -> Columns:
    """Detached per-pair numbers of one batch, each (B,); reference_* only with a reference."""
    columns: Columns = {
        "losses": output.losses.detach(),
        "chosen_rewards": output.chosen_rewards.detach(),
        "rejected_rewards": output.rejected_rewards.detach(),
        "policy_chosen": policy.chosen.detach(),
        "policy_rejected": policy.rejected.detach(),
        "chosen_tokens": policy.chosen_count,
        "rejected_tokens": policy.rejected_count,
        "index": index,
    }
    if reference is not None:
        columns["reference_chosen"] = reference.chosen.detach()
        columns["reference_rejected"] = reference.rejected.detach()
    columns.update({f"terms/{name}": term.detach() for name, term in output.terms.items()})
    return columns


def records_of(columns: Columns) -> PairRecords:
    """The columns as `PairRecords` (reference_* None when there was no reference)."""
    return PairRecords(**{name: columns.get(name) for name in _RECORD_FIELDS})


def pair_train_metrics(columns: Columns) -> dict[str, float]:
    """The logged summary of one step over the global batch (means over pairs)."""
    def mean(name: str) -> float:
        return columns[name].double().mean().item()

    chosen, rejected = columns["chosen_rewards"], columns["rejected_rewards"]
    metrics = {
        "loss": mean("losses"),
        "rewards/accuracy": (chosen > rejected).double().mean().item(),
        "rewards/margin": (chosen.double() - rejected.double()).mean().item(),
        "rewards/chosen": mean("chosen_rewards"),
        "rewards/rejected": mean("rejected_rewards"),
        "logps/chosen": mean("policy_chosen"),
        "logps/rejected": mean("policy_rejected"),
    }
    if "reference_chosen" in columns:
        metrics["logps/chosen_change"] = mean("policy_chosen") - mean("reference_chosen")
        metrics["logps/rejected_change"] = mean("policy_rejected") - mean("reference_rejected")
    metrics.update({name: mean(name) for name in columns if name.startswith("terms/")})
    return metrics


def initial_eval_logps(run: Run, resuming: bool) -> PairLogps:
    """The step-0 policy's held-out log-probs, saved in the run directory with a sha256 of their
    tensors: read back when resuming; a missing or damaged file is scored again from a fresh copy
    of the starting model (the policy has moved on since), with a notice."""
    path = Path(run.run_dir) / INITIAL_LOGPS
    if not resuming:
        columns = score_heldout(run)
    else:
        tensors, problem = read_checked(path, INITIAL_NAMES, len(run.splits["eval"]))
        if tensors is not None:
            return PairLogps(tensors["chosen"], tensors["rejected"])
        if run.is_main:
            print(f"prefalign: {path}: {problem}; scoring the starting model again",
                  file=sys.stderr)
        columns = _score_starting_model(run)
    logps = PairLogps(columns["policy_chosen"].float(), columns["policy_rejected"].float())
    if run.accelerator.is_main_process:
        tensors = {"chosen": logps.chosen.contiguous(), "rejected": logps.rejected.contiguous()}
        write_checked(path, tensors)
    return logps


def _score_starting_model(run: Run) -> Columns:
    """Score the held-out split with a fresh copy of the model the run started from: base
    weights, starting adapter merged."""
    model = load_reference_model(run.config.model, expected_hash=run.loaded.weight_hash)
    scorer = build_scorer(model.to(run.accelerator.device), run.config.train)
    return score_heldout(dataclasses.replace(run, scorer=scorer, sharded=False))
