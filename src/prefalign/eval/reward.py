"""`prefalign rm eval`: a trained reward model on preference pairs — accuracy beside the length
baselines, by source and category, score distributions, calibration, and a DPO run beside it.

Every pair is scored as training scored it (the run's chat template and truncation, the prompt
computed once, the reward read at each reply's last non-pad token). Outputs: eval.json,
pairs.csv, report.html and summary.md in the output directory, each written atomically.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from prefalign import __version__
from prefalign.data.tokenize import TruncationOptions
from prefalign.data.tokenizer import load_tokenizer
from prefalign.engine.forward.onednn import CpuMatmul, cpu_matmul
from prefalign.engine.forward.packed_layout import PairTokens
from prefalign.engine.forward.reward import PairRewards, packed_pair_rewards
from prefalign.engine.manifest import utc_now
from prefalign.engine.models.load import DTYPES
from prefalign.engine.models.reward import load_reward_final
from prefalign.engine.models.runs import RunFiles, read_run
from prefalign.eval.calibration import calibration_summary
from prefalign.eval.pairs import PairSet, load_pair_set
from prefalign.eval.reward_columns import pair_section
from prefalign.eval.reward_dpo import dpo_section, read_dpo_run
from prefalign.eval.reward_outputs import write_reward_outputs


@dataclass(frozen=True)
class RewardEvalOptions:
    """pairs: preference-pair sources to evaluate. calibration: sources to fit the temperature
    on (empty: a seeded half of `pairs`, the ECE then measured on the other half). dpo_run: a
    DPO run scored on the same pairs. max_pairs: a seeded sample of that many pairs (None:
    all). batch_size: pairs per scoring forward."""

    pairs: tuple[str, ...]
    calibration: tuple[str, ...] = ()
    dpo_run: Path | None = None
    max_pairs: int | None = None
    seed: int = 0
    batch_size: int = 4
    cpu_matmul: CpuMatmul = "auto"

    def __post_init__(self) -> None:
        if not self.pairs:
            raise ValueError("rm eval: give the pairs to score (--pairs FILE...)")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ValueError(f"rm eval: max_pairs must be >= 1, got {self.max_pairs}")
        if self.batch_size < 1:
            raise ValueError(f"rm eval: batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class RewardModel:
    """A trained reward-model run, loaded: its files, tokenizer and `final/` model."""

    run: RunFiles
    tokenizer: object
    model: torch.nn.Module

    @property
    def truncation(self) -> TruncationOptions:
        # Score every pair given: cut over-long ones as training would rather than drop them.
        data = self.run.config.data
        return TruncationOptions(data.max_length, data.max_prompt_length, "truncate")


def read_reward_run(run_dir: str | Path) -> RunFiles:
    """A finished reward-model run; ValueError for a run of another method."""
    run = read_run(run_dir)
    method = run.manifest.get("method")
    if method != "rm":
        raise ValueError(f"{run.run_dir}: a {method or 'non-rm'} run, not a reward model "
                         "(`prefalign rm train` makes one; `prefalign eval` evaluates policies)")
    return run


def load_reward_run(run_dir: str | Path) -> RewardModel:
    """The run, its tokenizer and its final reward model (in the run's dtype)."""
    run = read_reward_run(run_dir)
    config = run.config.model
    tokenizer = load_tokenizer(str(run.final_dir), trust_remote_code=config.trust_remote_code)
    model = load_reward_final(run.final_dir, DTYPES[config.dtype],
                              trust_remote_code=config.trust_remote_code)
    return RewardModel(run, tokenizer, model)


def run_reward_eval(run_dir: str | Path, out_dir: str | Path,
                    options: RewardEvalOptions) -> dict:
    """Evaluate the reward model at `run_dir`; write every output under `out_dir`; return
    eval.json's content."""
    with cpu_matmul(options.cpu_matmul):
        return _run(run_dir, Path(out_dir), options)


def _run(run_dir: str | Path, out_dir: Path, options: RewardEvalOptions) -> dict:
    start = time.perf_counter()
    timings: dict[str, float] = {}
    reward = load_reward_run(run_dir)
    if options.dpo_run is not None:
        read_dpo_run(options.dpo_run)  # a wrong --dpo fails before any scoring
    out_dir.mkdir(parents=True, exist_ok=True)  # an unwritable --out fails now, not at the end
    data = load_pair_set(options.pairs, reward.tokenizer, reward.truncation,
                         max_pairs=options.max_pairs, seed=options.seed)
    tick = time.perf_counter()
    rewards = score_reward_pairs(reward.model, data, batch_size=options.batch_size,
                                 desc="held-out pairs")
    timings["pairs"] = round(time.perf_counter() - tick, 2)
    results = _header(reward.run, options)
    results["pairs"] = pair_section(data, rewards, options.pairs)
    results["calibration"] = _calibration(reward, data, rewards, options, results["pairs"])
    if options.dpo_run is not None:
        tick = time.perf_counter()
        results["dpo"] = dpo_section(options.dpo_run, data, rewards, options.batch_size,
                                     results["pairs"])
        timings["dpo"] = round(time.perf_counter() - tick, 2)
    results["timings"] = timings
    results["elapsed_seconds"] = round(time.perf_counter() - start, 1)
    write_reward_outputs(out_dir, results, reward.run.run_dir)
    return results


@torch.no_grad()
def score_reward_pairs(model: torch.nn.Module, data: PairSet, *, batch_size: int = 4,
                       desc: str | None = None) -> PairRewards:
    """Both sides' rewards of every pair, in `data` order; batches are formed shortest first so
    that packed rows stay small, and the results put back in order."""
    tokens = [PairTokens.from_tokenized(pair) for pair in data.tokenized]
    lengths = torch.tensor([pair.segment_length for pair in tokens])
    order = torch.argsort(lengths, stable=True)
    chosen, rejected = torch.zeros(len(data)), torch.zeros(len(data))  # (N,) each
    with tqdm(total=len(data), desc=desc, unit="pair", disable=desc is None) as bar:
        for indices in order.split(batch_size):
            batch = [tokens[i] for i in indices.tolist()]
            both = packed_pair_rewards(model, batch).cpu()  # (2b,)
            chosen[indices], rejected[indices] = both[:len(batch)], both[len(batch):]
            bar.update(len(batch))
    counts = [torch.tensor([len(getattr(pair, f"{side}_ids")) for pair in data.tokenized])
              for side in ("chosen", "rejected")]
    return PairRewards(chosen, rejected, *counts)


def calibration_split(size: int, seed: int) -> tuple[list[int], list[int]]:
    """A seeded half of the positions (calibration) and the rest (evaluated), each sorted."""
    order = list(range(size))
    random.Random(seed).shuffle(order)
    half = size // 2
    return sorted(order[:half]), sorted(order[half:])


def _calibration(reward: RewardModel, data: PairSet, rewards: PairRewards,
                 options: RewardEvalOptions, pairs: dict) -> dict:
    margins = rewards.chosen - rewards.rejected  # (N,)
    if options.calibration:
        other = load_pair_set(options.calibration, reward.tokenizer, reward.truncation,
                              max_pairs=None, seed=options.seed)
        fitted = score_reward_pairs(reward.model, other, batch_size=options.batch_size,
                                    desc="calibration pairs")
        summary = calibration_summary(fitted.chosen - fitted.rejected, margins)
        summary["split"] = f"fitted on {', '.join(options.calibration)}; measured on every pair"
        return summary
    if len(data) < 2:
        return {"note": "not measured: fewer than 2 pairs to split into calibration and "
                        "evaluation halves"}
    fit, measured = calibration_split(len(data), options.seed)
    summary = calibration_summary(margins[fit], margins[measured])
    summary["split"] = (f"fitted on a seeded half of the pairs ({len(fit)}, seed "
                        f"{options.seed}); measured on the other {len(measured)}")
    roles = ["evaluated"] * len(data)
    for index in fit:
        roles[index] = "calibration"
    pairs["per_pair"]["calibration_role"] = roles
    return summary


def _header(run: RunFiles, options: RewardEvalOptions) -> dict:
    manifest = run.manifest
    code = manifest.get("environment", {}).get("code", {})
    return {
        "format": "prefalign-rm-eval/1",
        "prefalign_version": __version__,
        "created": utc_now(),
        "run": {
            "run_dir": str(run.run_dir), "name": run.config.run.name,
            "outcome": manifest.get("outcome"), "method": manifest.get("method"),
            "loss": manifest.get("loss", {}).get("name"),
            "loss_params": manifest.get("loss", {}).get("params", {}),
            "model_source": manifest.get("model", {}).get("source"),
            "model_weight_hash": manifest.get("model", {}).get("weight_hash"),
            "lora": manifest.get("model", {}).get("lora"),
            "chat_template_sha256": manifest.get("chat_template", {}).get("sha256"),
            "data": {split: {"source": ", ".join(getattr(run.config.data, split)),
                             "fingerprint": info.get("fingerprint")}
                     for split, info in manifest.get("data", {}).items()},
            "code_version": code.get("git_commit") or code.get("package"),
            "steps": manifest.get("steps"),
            "final_eval": manifest.get("final_eval"),
        },
        "model": {"source": str(run.final_dir),
                  "reward_model": manifest.get("reward_model", {})},
        "settings": {"pairs": list(options.pairs), "calibration": list(options.calibration),
                     "dpo_run": str(options.dpo_run) if options.dpo_run else None,
                     "max_pairs": options.max_pairs, "seed": options.seed,
                     "batch_size": options.batch_size, "cpu_matmul": options.cpu_matmul,
                     "template": "the run's chat template"},
    }
