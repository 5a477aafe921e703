"""One step's rollout: G completions per prompt from the current policy, their rewards from the
judges, advantages, and the tensors the μ optimisation passes train on.

Sampling goes through the engine's sampler (one prefill per prompt serves its G samples).
Completion j of prompt p draws from a random stream seeded by (the batch's seed, p's id, j),
the batch's seed derived from the run seed and the batch number, so a resumed run samples
exactly what the uninterrupted one did without carrying generator state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from prefalign.data.tokenize import IGNORE_INDEX
from prefalign.engine.forward.gather import eval_mode
from prefalign.engine.forward.sequences import collate_sequences
from prefalign.engine.sampling.decode import sample_prompts
from prefalign.engine.sampling.settings import DecodeSettings
from prefalign.engine.sampling.tokens import pad_token_id, stop_token_ids
from prefalign.judges.base import Completions
from prefalign.judges.scoped import KindScopedJudge, in_scope
from prefalign.losses.policy_gradient import group_advantages, rloo_advantages, sequence_weights
from prefalign.trainers.grpo.prompts import PromptSplit

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from prefalign.config import GrpoSection
    from prefalign.judges.combine import Panel

EVAL_SEED_OFFSET = 7_919  # held-out sampling uses its own fixed stream, the same at every eval


def decode_settings(grpo: GrpoSection, seed: int, prompts: int) -> DecodeSettings:
    return DecodeSettings(do_sample=True, temperature=grpo.temperature, top_p=grpo.top_p,
                          top_k=grpo.top_k, max_new_tokens=grpo.max_new_tokens, seed=seed,
                          num_samples=grpo.group_size, batch_size=max(prompts, 1))


def batch_seed(run_seed: int, batch_number: int) -> int:
    """The sampling seed of global batch `batch_number` (eval: EVAL_SEED_OFFSET's stream)."""
    return (run_seed * 1_000_003 + batch_number) % (1 << 62)


@dataclass(frozen=True)
class Group:
    """Prompt `position` of the split and its G sampled completions (token ids, finish)."""

    position: int
    completions: list[tuple[int, ...]]
    truncated: list[bool]


def sample_groups(model: nn.Module, tokenizer: PreTrainedTokenizerBase, split: PromptSplit,
                  positions: Sequence[int], settings: DecodeSettings) -> list[Group]:
    """G completions for each prompt position, in the order of `positions`."""
    prompt_ids = [split.token_ids[p] for p in positions]
    keys = [split.rows[p].id for p in positions]
    found: dict[int, Group] = {}
    with eval_mode(model):
        for samples in sample_prompts(model, prompt_ids, settings, stop_token_ids(tokenizer),
                                      pad_id=pad_token_id(tokenizer), keys=keys):
            index = samples[0].prompt
            found[index] = Group(positions[index], [s.token_ids for s in samples],
                                 [s.finish_reason == "length" for s in samples])
    return [found[i] for i in range(len(positions))]


def judge_groups(panel: Panel, tokenizer: PreTrainedTokenizerBase, split: PromptSplit,
                 groups: Sequence[Group]) -> tuple[Tensor, dict[str, Tensor]]:
    """Combined rewards (N,) and each judge's (N,), N = prompts × G, grouped consecutively."""
    prompts, texts, columns = [], [], []
    for group in groups:
        row = split.rows[group.position]
        for tokens in group.completions:
            prompts.append(row.messages)
            texts.append(tokenizer.decode(tokens, skip_special_tokens=True))
            columns.append({**row.columns, "prompt_id": row.id})
    completions = Completions(prompts, texts, columns)
    verdicts = panel.score(completions)
    if any(score is None for score in verdicts.combined):
        raise ValueError("grpo: the judges' combination dropped completions (piecewise "
                         "thresholds do not apply to grpo rewards)")
    combined = torch.tensor(verdicts.combined, dtype=torch.float32)  # (N,)
    by_judge = {name: torch.tensor(scores, dtype=torch.float32)
                for name, scores in verdicts.by_judge.items()}
    for entry in panel.judges:  # a scoped judge's own column: NaN off its kind (not scored)
        if isinstance(entry.judge, KindScopedJudge):
            scored = torch.zeros(len(texts), dtype=torch.bool)
            scored[in_scope(entry.judge, completions)] = True
            by_judge[entry.judge.id] = by_judge[entry.judge.id].masked_fill(~scored, math.nan)
    return combined, by_judge


def advantages_of(rewards: Tensor, grpo: GrpoSection) -> Tensor:
    """(N,) advantages: group-normalised (scaled by grpo.scale) or RLOO's."""
    if grpo.estimator == "rloo":
        return rloo_advantages(rewards, grpo.group_size)
    return group_advantages(rewards, grpo.group_size, grpo.scale)


def tied_groups(rewards: Tensor, group_size: int) -> Tensor:
    """(N,) 1.0 where every completion of the row's group has the same reward, else 0.0."""
    grouped = rewards.reshape(-1, group_size)  # (P, G)
    tied = (grouped == grouped[:, :1]).all(dim=1).float()  # (P,)
    return tied.repeat_interleave(group_size)


def micro_batch_tensors(split: PromptSplit, groups: Sequence[Group], pad_id: int,
                        per_row: dict[str, Tensor]) -> dict[str, Tensor]:
    """Right-padded prompt + completion sequences of these groups, labels only on completion
    tokens, with each completion's `per_row` numbers and "index" (its prompt's position)."""
    sequences, index = [], []
    for group in groups:
        prompt = split.token_ids[group.position]
        for tokens in group.completions:
            sequences.append(([*prompt, *tokens], [IGNORE_INDEX] * len(prompt) + list(tokens)))
            index.append(group.position)
    batch = collate_sequences(sequences, pad_id)
    batch["index"] = torch.tensor(index, dtype=torch.long)
    lengths = torch.tensor([len(t) for g in groups for t in g.completions])
    batch["lengths"] = lengths
    batch["truncated"] = torch.tensor([float(t) for g in groups for t in g.truncated])
    return {**batch, **per_row}


def completion_weights(lengths: Tensor, grpo: GrpoSection, sequences: int,
                       total_tokens: float) -> Tensor:
    """w (N,) of `sequence_weights` for these completions, with the whole step's counts."""
    width = max(int(lengths.max()), 1)
    mask = (torch.arange(width)[None] < lengths[:, None]).float()  # (N, C)
    return sequence_weights(mask, grpo.normalisation, num_sequences=sequences,
                            max_completion_length=grpo.max_new_tokens,
                            total_tokens=total_tokens)
