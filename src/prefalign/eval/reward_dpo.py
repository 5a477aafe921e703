"""A DPO run's implicit reward on the pairs a reward model was evaluated on, side by side.

The DPO policy and its reference score the same pairs under the DPO run's own tokenizer, chat
template and truncation (as `prefalign eval` scores them); the run's loss turns their log-probs
into implicit rewards β·(log π − log π_ref). The summary is `engine.metrics.eval_metrics`, so
its accuracy sits beside the same length baselines; the agreement says how often the two
rank a pair the same way and how their margins correlate.
"""

from __future__ import annotations

from pathlib import Path

import torch

from prefalign.data.tokenize import TruncationOptions
from prefalign.data.tokenizer import load_tokenizer
from prefalign.engine.forward.reward import PairRewards
from prefalign.engine.metrics import eval_metrics, pearson, reward_correct
from prefalign.engine.models.runs import RunFiles, load_policy, load_reference, read_run
from prefalign.eval.pairs import PairSet, ScoredPairs, records, score_pair_set, tokenize_pair_set
from prefalign.losses import make_loss


def dpo_section(run_dir: Path, data: PairSet, rewards: PairRewards, batch_size: int,
                pairs: dict) -> dict:
    """eval.json's `dpo` section; adds `dpo_margin` and `dpo_correct` to the per-pair columns."""
    run = read_dpo_run(run_dir)
    config = run.config
    tokenizer = load_tokenizer(str(run.final_dir),
                               trust_remote_code=config.model.trust_remote_code)
    truncation = TruncationOptions(config.data.max_length, config.data.max_prompt_length,
                                   "truncate")
    tokenized = tokenize_pair_set(data.pairs, data.sources, tokenizer, truncation)
    models = {"reference": load_reference(run), "policy": load_policy(run)}
    logps = {name: score_pair_set(model, tokenized, batch_size=batch_size,
                                  desc=f"DPO run ({name})") for name, model in models.items()}
    loss = make_loss(config.loss.name, **config.loss.params)
    implicit = records(ScoredPairs(tokenized, logps["reference"], logps["policy"]), loss)
    dpo_margins = implicit.chosen_rewards - implicit.rejected_rewards  # (N,)
    dpo_correct = reward_correct(implicit.chosen_rewards, implicit.rejected_rewards)
    pairs["per_pair"]["dpo_margin"] = dpo_margins.tolist()
    pairs["per_pair"]["dpo_correct"] = dpo_correct.tolist()
    return {
        "run_dir": str(run.run_dir), "name": config.run.name, "loss": config.loss.name,
        "loss_params": dict(config.loss.params),
        "overall": {"n": len(tokenized), **eval_metrics(implicit)},
        "agreement": agreement(rewards, dpo_margins),
    }


def read_dpo_run(run_dir: Path) -> RunFiles:
    """A finished preference-training run (`prefalign train`); ValueError for another method."""
    run = read_run(run_dir)
    if run.manifest.get("method", "dpo") != "dpo":
        raise ValueError(f"--dpo {run_dir}: a {run.manifest['method']} run, not a DPO run")
    return run


def agreement(rewards: PairRewards, dpo_margins: torch.Tensor) -> dict:
    """How the reward model's ranking of each pair compares with the DPO run's."""
    rm_correct = rewards.chosen > rewards.rejected
    dpo_correct = dpo_margins > 0

    def fraction(flags: torch.Tensor) -> float:
        return flags.double().mean().item()

    return {
        "same_ranking": fraction(rm_correct == dpo_correct),
        "both_correct": fraction(rm_correct & dpo_correct),
        "only_reward_model_correct": fraction(rm_correct & ~dpo_correct),
        "only_dpo_correct": fraction(~rm_correct & dpo_correct),
        "margin_corr": pearson(rewards.chosen - rewards.rejected, dpo_margins),
    }
