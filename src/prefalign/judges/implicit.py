"""`--judge implicit:RUN_DIR`: a DPO run's implicit reward, β·[log π(y|x) − log π_ref(y|x)].

π is the run's `final/` policy, π_ref the reference it trained against (its base weights plus
any starting adapter, as `prefalign eval` loads it), β the run's `loss.params.beta`; log-probs
are summed over the response tokens, as DPO's loss sums them (Rafailov et al. 2023, eq. 5: the
policy's reward up to a term that depends on the prompt only, so it ranks completions of the
same prompt). Completions are tokenised as training tokenises responses, truncated to the run's
`data.max_length`, and scored by the packed pair forward the trainer uses, two completions of a
prompt per pair so that the prompt is computed once. Only runs whose loss has a reference have
this reward (not SimPO or ORPO).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from prefalign.data.tokenize import TokenizedPair, TruncationOptions
from prefalign.data.tokenizer import load_tokenizer
from prefalign.engine.forward.packed import score_tokenized_pairs
from prefalign.engine.models.load import weight_hash
from prefalign.engine.models.runs import load_policy, load_reference, read_run
from prefalign.judges.base import Completions, JudgeError
from prefalign.judges.tokens import pair_up, tokenize_completion_pairs
from prefalign.losses import make_loss

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase

BATCH_SIZE = 4  # pairs per packed forward


@dataclass(frozen=True)
class ImplicitRewardJudge:
    """A trained policy against its reference; `hash` covers both models' weights and β."""

    id: str
    hash: str
    policy: nn.Module = field(repr=False)
    reference: nn.Module = field(repr=False)
    tokenizer: PreTrainedTokenizerBase = field(repr=False)
    beta: float
    truncation: TruncationOptions
    batch_size: int = BATCH_SIZE

    def score(self, completions: Completions) -> list[float]:
        pairs = pair_up(completions)
        tokenized = tokenize_completion_pairs(self.tokenizer, completions, pairs, self.truncation)
        policy = _summed_logps(self.policy, tokenized, self.batch_size)
        reference = _summed_logps(self.reference, tokenized, self.batch_size)
        scores = [0.0] * len(completions)
        for (a, b), (pol_a, pol_b), (ref_a, ref_b) in zip(pairs, policy, reference, strict=True):
            scores[a] = self.beta * (pol_a - ref_a)
            scores[b] = self.beta * (pol_b - ref_b)
        return scores


@torch.no_grad()
def _summed_logps(model: nn.Module, pairs: Sequence[TokenizedPair],
                  batch_size: int) -> list[tuple[float, float]]:
    """(chosen, rejected) summed response log-probs of each pair under `model`, float."""
    sums = []
    for start in range(0, len(pairs), batch_size):
        logps = score_tokenized_pairs(model, pairs[start : start + batch_size])
        sums += list(zip(logps.chosen.double().tolist(), logps.rejected.double().tolist(),
                         strict=True))
    return sums


def load_implicit_judge(target: str) -> ImplicitRewardJudge:
    """The judge `implicit:TARGET` names (TARGET a finished DPO-family run directory)."""
    run = read_run(target)
    loss = make_loss(run.config.loss.name, **run.config.loss.params)
    if not loss.needs_reference:
        raise JudgeError(f"judge implicit:{target}: the run's loss {loss.name!r} has no "
                         "reference model, so no implicit reward β·log(π/π_ref); use a run "
                         "trained with dpo, ipo, hinge, rpo, robust or apo")
    beta = float(loss.params["beta"])
    data = run.config.data
    tokenizer = load_tokenizer(str(run.final_dir),
                               trust_remote_code=run.config.model.trust_remote_code)
    policy, reference = load_policy(run), load_reference(run)
    digest = hashlib.sha256(
        f"{weight_hash(policy)}\0{weight_hash(reference)}\0{beta!r}".encode()).hexdigest()
    return ImplicitRewardJudge(f"implicit:{target}", digest, policy, reference, tokenizer, beta,
                               TruncationOptions(data.max_length, data.max_prompt_length,
                                                 "truncate"))
