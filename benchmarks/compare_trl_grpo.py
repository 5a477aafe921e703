"""compare_trl.py's grpo configuration: prefalign's overrides, the prompts of every step in its
order (written for TRL), the two runs, their summaries and the report's grpo lines.

prefalign runs first: its worker records step 1's prompt ids, completion ids, rewards and
advantages, and the TRL worker (compare_trl_trl_grpo.py) trains its step 1 on those completions,
so the two step-1 losses are over identical tokens. An example is a completion; throughput is
completions per second and generated (completion) tokens per second.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from prefalign.config import load_config

HERE = Path(__file__).resolve().parent
REWARD = f"{HERE / 'compare_trl_reward.py'}:kind_aware_reward"  # the judge, TRL's reward_funcs
DEFAULT_PROMPTS = "bundled:grpo-safety-train"


def grpo_overrides(*, model_dir: Path, run_root: Path, prompts: str, seed: int, steps: int,
                   prompts_per_step: int, group_size: int, max_new_tokens: int, lr: float,
                   gradient_checkpointing: bool, extra: list[str]) -> list[str]:
    """`section.key=value` overrides for prefalign's grpo run: full fine-tune in float32, β = 0
    (no reference), ε = 0.2, μ = 1, group-std advantages, Dr. GRPO normalisation, sampling at
    temperature 1 without top-p or top-k, the shared reward module as the only judge."""
    values: dict[str, Any] = {
        "run.name": "prefalign", "run.output_dir": str(run_root), "run.seed": seed,
        "model.source": str(model_dir), "model.dtype": "float32", "train.autocast": "off",
        "model.gradient_checkpointing": gradient_checkpointing, "lora.enabled": False,
        "grpo.prompts": prompts, "grpo.group_size": group_size, "grpo.mu": 1,
        "grpo.epsilon": 0.2, "grpo.epsilon_high": None, "grpo.beta": 0.0,
        "grpo.estimator": "grpo", "grpo.scale": "group", "grpo.normalisation": "dr_grpo",
        "grpo.max_new_tokens": max_new_tokens, "grpo.temperature": 1.0, "grpo.top_p": 1.0,
        "grpo.top_k": 0, "grpo.judges": [REWARD], "grpo.harmful_judges": [],
        "grpo.benign_judges": [],
        "optim.lr": lr, "optim.warmup_steps": 0, "optim.schedule": "constant",
        "optim.weight_decay": 0.0, "optim.max_grad_norm": 1.0,
        "train.batch_size": prompts_per_step, "train.grad_accum": 1, "train.max_steps": steps,
        "train.eval_every": 0, "train.save_every": 0, "train.keep_last": 1, "train.log_every": 1,
    }
    return [f"{key}={json.dumps(value)}" for key, value in values.items()] + list(extra)


def overrides_from_args(args: Any, model_dir: Path, run_root: Path) -> list[str]:
    return grpo_overrides(
        model_dir=model_dir, run_root=run_root, prompts=args.prompts, seed=args.seed,
        steps=args.steps, prompts_per_step=args.batch_size, group_size=args.group_size,
        max_new_tokens=args.max_new_tokens, lr=grpo_lr(args),
        gradient_checkpointing=args.gradient_checkpointing, extra=args.prefalign_set)


def grpo_lr(args: Any) -> float:
    from compare_trl_data import CONFIGS

    return args.lr if args.lr is not None else CONFIGS["grpo"].lr


def planned_prompts(overrides: list[str]) -> tuple[list[Any], list[list[int]], list[int]]:
    """The prompt rows of every step, in order, as prefalign's grpo visits them, their token ids
    (the rendered chat, assistant header open) and their positions in the prompt file."""
    from compare_trl_data import training_order
    from prefalign.data.tokenizer import load_tokenizer
    from prefalign.trainers.grpo.prompts import prepare_prompt_split, read_prompts

    config = load_config(None, overrides)
    path = str(config.grpo.prompts)
    rows = read_prompts(path, "grpo.prompts")
    split = prepare_prompt_split("train", path, rows, load_tokenizer(config.model.source))
    order = training_order(config, len(split))
    return [split.rows[i] for i in order], [list(split.token_ids[i]) for i in order], order


def trl_row(row: Any) -> dict[str, Any]:
    """TRL's conversational prompt and the columns prefalign's judge gets (its `prompt_id`)."""
    return {"prompt": [message.to_dict() for message in row.messages], **row.columns,
            "prompt_id": row.id}


def prepare(args: Any, model_dir: Path, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """Write TRL's rows; the plan: every step's prompt ids and positions, in order."""
    rows, token_ids, order = planned_prompts(overrides_from_args(args, model_dir,
                                                                 workdir / "plan-grpo"))
    data_file = workdir / "grpo-rows.jsonl"
    with open(data_file, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(trl_row(row)) + "\n")
    size = args.batch_size
    positions = [order[start : start + size] for start in range(0, len(order), size)]
    return data_file, {"prompt_ids": token_ids, "positions": positions}


def run_grpo(args: Any, model_dir: Path, data_file: Path, workdir: Path, trl_python: Path,
             plan: dict[str, Any], run_worker: Any) -> list[dict[str, Any]]:
    """prefalign, then TRL on its step-1 completions; both runs' entries (TRL's first, as in
    the other configurations' tables)."""
    spec = {"config": "grpo", "task": "grpo", "model_dir": str(model_dir),
            "data_file": str(data_file), "steps": args.steps, "batch_size": args.batch_size,
            "group_size": args.group_size, "max_new_tokens": args.max_new_tokens,
            "lr": grpo_lr(args), "seed": args.seed, "bf16": False, "lora": None,
            "gradient_checkpointing": args.gradient_checkpointing}
    directory = workdir / "grpo" / "prefalign"
    overrides = overrides_from_args(args, model_dir, directory / "run")
    ours = run_worker(Path(sys.executable), "compare_trl_prefalign.py",
                      {**spec, "tokens": "own", "prefalign_overrides": overrides}, directory)
    ours["order_verified"] = ours["sampled_positions"] == plan["positions"][: args.steps]
    theirs = run_worker(trl_python, "compare_trl_trl_grpo.py",
                        {**spec, "tokens": "same", "planned_prompt_ids": plan["prompt_ids"],
                         "step1": ours.get("step1")}, workdir / "grpo" / "trl-same")
    return [{"config": "grpo", "task": "grpo", "side": "trl", "tokens": "same", "result": theirs},
            {"config": "grpo", "task": "grpo", "side": "prefalign", "tokens": "own",
             "result": ours}]


# ----------------------------------------------------------------------------- summary


def summarize_grpo(result: dict[str, Any]) -> dict[str, Any]:
    """Completions/s and completion tokens/s over the steady steps (every step but the first)
    and all in (every step: generation + update), memory, losses, the step values.

    MFU is left out (NaN): the sampler's work depends on how each side batches and caches
    decoding, and there is no least count of it as there is for a forward pass."""
    from compare_trl_common import STEP_VALUES
    from compare_trl_report import LOSSES_SHOWN

    seconds, lengths = result["step_seconds"], result["completion_lengths"]
    timed = slice(1, None) if len(seconds) > 1 else slice(0, None)
    completions = [len(step) for step in lengths]
    tokens = [sum(step) for step in lengths]
    train_seconds, all_in_seconds = sum(seconds[timed]), sum(seconds)
    losses = result["losses"]
    return {
        "steps": len(seconds), "examples": sum(completions),
        "train_examples_per_s": sum(completions[timed]) / train_seconds,
        "all_in_examples_per_s": sum(completions) / all_in_seconds,
        "tokens_per_s": sum(tokens[timed]) / train_seconds,
        "all_in_tokens_per_s": sum(tokens) / all_in_seconds,
        "peak_rss_mib": result["peak_rss_mib"],
        "model_flops_per_s": math.nan, "mfu": math.nan, "mfu_6nt": math.nan,
        "train_seconds": train_seconds, "all_in_seconds": all_in_seconds,
        "reference_seconds": 0.0,
        "step1_loss": losses[0] if losses else math.nan,
        "losses": losses[:LOSSES_SHOWN],
        "reward_means": result["reward_mean"],
        "step1_values": {name: result[name][0] for name in STEP_VALUES["grpo"]} if losses else {},
    }


def _max_difference(a: list[float] | None, b: list[float] | None) -> float:
    if not a or not b or len(a) != len(b):
        return math.nan
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def format_grpo(entries: list[dict[str, Any]]) -> str:
    """Mean reward per step of each run; the step-1 comparison on identical completions."""
    runs = {e["side"]: e for e in entries if e["config"] == "grpo"}
    if set(runs) != {"trl", "prefalign"}:
        return ""
    ours, theirs = runs["prefalign"]["result"], runs["trl"]["result"]
    lines = ["grpo: ex = completions, tokens = generated completion tokens; train = steps 2.., "
             "all in = every step (sampling + judging + update)", "grpo: mean reward per step"]
    for side in ("trl", "prefalign"):
        values = " ".join(f"{r:.4f}" for r in runs[side]["summary"]["reward_means"])
        lines.append(f"  {side:<20} {values}")
    lines.append(f"grpo prefalign: sampled the planned prompts in order: "
                 f"{'yes' if ours['order_verified'] else 'NO'}")
    matched = all(theirs["prompt_ids_match"]) and len(theirs["prompt_ids_match"]) > 0
    lines.append(f"grpo trl: prompt token ids equal prefalign's at every step: "
                 f"{'yes' if matched else 'NO ' + str(theirs['prompt_ids_match'])}")
    if not theirs["step1_injected"]:
        lines.append("grpo trl: step 1 trained on TRL's own completions (prompt ids differ), "
                     "so the step-1 losses are over different tokens")
        return "\n".join(lines)
    step1_ours, step1_theirs = ours["step1"], theirs["step1"]
    lines.append(f"grpo step 1 on identical completions ({len(step1_ours['rewards'])} of "
                 f"prefalign's): rewards differ by at most "
                 f"{_max_difference(step1_ours['rewards'], step1_theirs.get('rewards')):.2e}, "
                 f"advantages by {_max_difference(step1_ours['advantages'], step1_theirs.get('advantages')):.2e}")
    for name in ("losses", "neg_logp_mean", "grad_norm"):
        a, b = ours[name][0], theirs[name][0]
        lines.append(f"  {name:<14} prefalign {a:.8f}  trl {b:.8f}  |Δ| {abs(a - b):.2e}  "
                     f"relative {abs(a - b) / max(abs(b), 1e-30):.2e}")
    return "\n".join(lines)
