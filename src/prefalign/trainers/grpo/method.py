"""GRPO (and RLOO) as a `Method` of the shared loop: a batch is a set of prompts, sampled online.

Per global batch of prompts: G completions each from the current policy, rewards from the judges,
advantages (rollout.py); then μ = `grpo.mu` optimiser steps on those completions, each the
clipped surrogate per token (`losses.policy_gradient.clipped_surrogate`) weighted by the
configured normalisation, so the step's loss is L = Σ_i w_i Σ_t L_it over every completion of
every process. The sampling policy's per-token log-probs are recorded by the first pass's forward
(the weights that sampled, the scorer that trains), which makes ρ exactly 1 there; passes 2..μ
divide by them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from prefalign.config import Config
from prefalign.engine.forward.precision import policy_precision
from prefalign.engine.forward.token_logps import TokenLogpScorer
from prefalign.losses.policy_gradient import clipped_surrogate, policy_gradient_loss
from prefalign.trainers.grpo import rollout
from prefalign.trainers.grpo.checks import check_grpo_config, load_judges
from prefalign.trainers.grpo.metrics import JUDGE_PREFIX, eval_metrics, train_metrics
from prefalign.trainers.grpo.prompts import PromptSplit, prepare_prompt_split, read_prompts
from prefalign.trainers.grpo.reference import TokenReference, build_token_reference
from prefalign.trainers.loop.method import Columns, Method

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from prefalign.engine.models.load import LoadedModel
    from prefalign.trainers.loop.run import Run

PER_ROW = ("rewards", "advantages", "weights", "tied")


class GrpoMethod(Method):
    """Online policy gradient on judged samples; see the module docstring."""

    name = "grpo"
    unit = "prompts"

    def __init__(self, config: Config):
        check_grpo_config(config)
        grpo = config.grpo
        self.grpo = grpo
        self.passes_per_batch = grpo.mu
        self.prompt_rows = {"train": read_prompts(str(grpo.prompts), "grpo.prompts")}
        if grpo.eval_prompts is not None:
            self.prompt_rows["eval"] = read_prompts(grpo.eval_prompts, "grpo.eval_prompts")
        self.panel = load_judges(grpo, self.prompt_rows)  # before any model loads
        self.reference: TokenReference | None = None
        self._rollout: list[dict[str, Tensor]] = []
        self._run: Run | None = None

    def prepare_splits(self, config: Config, tokenizer: PreTrainedTokenizerBase,
                       rejects_dir: Path | None) -> dict[str, PromptSplit]:
        paths = {"train": str(config.grpo.prompts), "eval": config.grpo.eval_prompts}
        return {name: prepare_prompt_split(name, str(paths[name]), rows, tokenizer)
                for name, rows in self.prompt_rows.items()}

    def build_scorer(self, model: nn.Module, config: Config) -> nn.Module:
        return TokenLogpScorer(model, config.train.logps_chunk_size, config.train.logps_keep_mib)

    def attach(self, config: Config, loaded: LoadedModel, scorer: nn.Module,
               splits: dict[str, Any], accelerator: Any) -> None:
        self.reference = build_token_reference(config, loaded, scorer, accelerator.device)

    def start(self, run: Run, resuming: bool) -> None:
        self._run = run

    def step_batches(self, run: Run, step: int,
                     micro_batches: list[Tensor]) -> list[dict[str, Tensor]]:
        """Sample, judge and lay out a new batch on its first pass; reuse it on the others (the
        loop resumes only at batch boundaries: grpo.mu divides train.save_every)."""
        if step % self.passes_per_batch == 0 or not self._rollout:
            self._rollout = self._sample_step(run, step // self.passes_per_batch, micro_batches)
        return self._rollout

    def _sample_step(self, run: Run, batch_number: int,
                     micro_batches: list[Tensor]) -> list[dict[str, Tensor]]:
        split, grpo = run.splits["train"], self.grpo
        positions = [p for part in micro_batches for p in part.tolist()]
        seed = rollout.batch_seed(run.config.run.seed, batch_number)
        groups = self._sample(run, split, positions, seed)
        per_row = self._judge(run, split, groups)
        lengths = torch.tensor([len(t) for g in groups for t in g.completions])
        total = _summed(run, float(lengths.sum()))
        sequences = len(lengths) * run.accelerator.num_processes
        per_row["weights"] = rollout.completion_weights(lengths, grpo, sequences, total)
        batches, start = [], 0
        for j, part in enumerate(micro_batches):
            mine = groups[start: start + len(part)]
            rows = slice(start * grpo.group_size, (start + len(part)) * grpo.group_size)
            batch = rollout.micro_batch_tensors(split, mine, run.pad_token_id,
                                                {k: v[rows] for k, v in per_row.items()})
            batch["micro"] = torch.tensor([j])
            if self.reference is not None:
                batch["reference_logps"] = self.reference.logps(batch)
            batches.append(batch)
            start += len(part)
        return batches

    def _sample(self, run: Run, split: PromptSplit, positions: Sequence[int],
                seed: int) -> list[rollout.Group]:
        settings = rollout.decode_settings(self.grpo, seed, len(positions))
        policy = run.accelerator.unwrap_model(run.scorer).model
        return rollout.sample_groups(policy, run.loaded.tokenizer, split, positions, settings)

    def _judge(self, run: Run, split: PromptSplit,
               groups: Sequence[rollout.Group]) -> dict[str, Tensor]:
        rewards, by_judge = rollout.judge_groups(self.panel, run.loaded.tokenizer, split, groups)
        return {"rewards": rewards, "advantages": rollout.advantages_of(rewards, self.grpo),
                "tied": rollout.tied_groups(rewards, self.grpo.group_size),
                **{JUDGE_PREFIX + name: scores for name, scores in by_judge.items()}}

    def make_batch(self, split: PromptSplit, indices: Tensor | Sequence[int],
                   pad_token_id: int) -> dict[str, Tensor]:
        """Held-out prompts: G completions each from the policy as it is, on a fixed stream
        (the same seeds at every evaluation), judged."""
        assert self._run is not None, "make_batch runs after start()"
        run, positions = self._run, torch.as_tensor(indices).tolist()
        seed = rollout.batch_seed(run.config.run.seed + rollout.EVAL_SEED_OFFSET, 0)
        groups = self._sample(run, split, positions, seed)
        per_row = self._judge(run, split, groups)
        return rollout.micro_batch_tensors(split, groups, pad_token_id, per_row)

    def forward(self, run: Run, scorer: nn.Module, batch: dict[str, Tensor],
                split: str) -> tuple[Tensor, Columns]:
        if split != "train":
            losses = torch.zeros(len(batch["rewards"]))
            return losses, {**_judged_columns(batch), "losses": losses}
        with policy_precision(run.config.train, batch["input_ids"].device):
            current = scorer(input_ids=batch["input_ids"],
                             attention_mask=batch["attention_mask"], labels=batch["labels"])
        old = batch.get("old_logps")
        if old is None:  # the first pass: these weights sampled the batch
            old = current.logps.detach()
            self._rollout[int(batch["micro"][0])]["old_logps"] = old.cpu()
        grpo = self.grpo
        terms = clipped_surrogate(current.logps, old, batch["advantages"],
                                  epsilon=grpo.epsilon, epsilon_high=grpo.epsilon_high,
                                  beta=grpo.beta, reference_logps=batch.get("reference_logps"))
        mask = current.mask  # (B, C)
        losses = policy_gradient_loss(terms.losses, mask, batch["weights"])  # (B,)
        columns = {**_judged_columns(batch), "losses": losses.detach(),
                   "advantages": batch["advantages"], "weights": batch["weights"],
                   "clipped_tokens": (terms.clipped * mask).sum(dim=1),
                   "kl_sum": (terms.kl * mask).sum(dim=1),
                   "neg_logp_sum": -(old * mask).sum(dim=1),
                   "ratio_deviation": ((terms.ratio - 1).abs() * mask).amax(dim=1)}
        return losses, columns

    def loss_divisor(self, run: Run, micro_batches: list[Tensor]) -> float:
        """1 / W: the weights already divide by the whole step's counts (DDP averages the W
        processes' gradients, which makes the sum over all of them)."""
        return 1.0 / run.accelerator.num_processes

    def train_metrics(self, columns: Columns) -> dict[str, float]:
        return train_metrics(columns)

    def eval_metrics(self, run: Run, columns: Columns) -> dict[str, float]:
        return eval_metrics(columns)

    def manifest_sections(self, run: Run) -> dict[str, Any]:
        """`grpo`: sampling, G, μ, clip, β, estimator, judges, reference; `loss`: the objective
        by name ("grpo/dr_grpo", "rloo/dapo", ...) with β and ε, as `prefalign eval` reads it."""
        settings = rollout.decode_settings(self.grpo, 0, 1).token_settings()
        settings.pop("seed")
        grpo = self.grpo
        section = {
            "sampling": {**settings, "seed": "run.seed × 1000003 + batch number, then (prompt "
                         "id, sample index) per completion"},
            "group_size": grpo.group_size, "mu": grpo.mu, "epsilon": grpo.epsilon,
            "epsilon_high": grpo.epsilon_high, "beta": grpo.beta,
            "estimator": grpo.estimator, "scale": grpo.scale,
            "normalisation": grpo.normalisation, "judges": self.panel.describe(),
            "reference": self.reference.describe() if self.reference else {"strategy": "none"},
        }
        loss = {"name": f"{grpo.estimator}/{grpo.normalisation}", "params": {
            "beta": grpo.beta, "epsilon": grpo.epsilon, "epsilon_high": grpo.epsilon_high}}
        return {"grpo": section, "loss": loss}


def _judged_columns(batch: dict[str, Tensor]) -> Columns:
    names = ("index", "rewards", "tied", "lengths", "truncated")
    return {**{name: batch[name] for name in names},
            **{k: v for k, v in batch.items() if k.startswith(JUDGE_PREFIX)}}


def _summed(run: Run, value: float) -> float:
    """`value` summed over the processes."""
    if run.accelerator.num_processes == 1:
        return value
    total = torch.tensor([value], device=run.accelerator.device)
    return float(run.accelerator.reduce(total, reduction="sum").item())
