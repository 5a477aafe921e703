"""compare_trl.py's numbers: per-run summaries, model FLOPs and MFU, prefalign/TRL ratios, the table.

An example is a pair (dpo, rm) or a conversation (sft). Model FLOPs count the work an example
needs at the least, whatever an implementation runs, so MFU is comparable between the sides and
no implementation can pass 100%. With B the body's matmul weights (everything but the output
projection; the input embedding is a lookup), H the output projection (vocabulary × width), n
layers of width d:
- dpo, a pair of prompt P and responses C, R: the prompt once, the output projection only where
  a response token is scored:
    forward = 2·B·(P + C + R) + 2·H·(C + R) + 2·n·d·[(P + C)² + (P + R)² − P²]
  (the last term: attention scores and values, halved by the causal mask);
- rm: the same without the output projection (the scalar head's 2·d per reply is negligible);
- sft, a conversation of T tokens of which S are scored: 2·B·T + 2·H·S + 2·n·d·T².
A full fine-tune costs 3 forwards (forward, input gradients, weight gradients), LoRA 2 (no
weight gradients for frozen weights; the adapter's are negligible); DPO's reference 1 more.
`mfu_6nt` uses the common rough count instead: (6 or 4)·N·T for training plus, for dpo, 2·N·T
for the reference, N = B + H (B alone for rm), T = the tokens of every sequence (a pair's prompt
counted twice).
MFU = model FLOPs / all-in seconds / the machine's peak: the best FLOP/s of torch.mm or oneDNN's
linear kernel, whichever is faster, measured in every worker process before it loads the model,
in the run's precision (`compare_trl_common.matmul_peak_flops`).
"""

from __future__ import annotations

import math
from typing import Any

from compare_trl_common import STEP_VALUES

LOSSES_SHOWN = 10
STEP_VALUE_WORDS = {"dpo": "mean log-probs (nats)", "rm": "mean rewards",
                    "sft": "scored tokens",
                    "grpo": "mean reward, completion length, −log π and grad norm"}


def pair_flops(prompt: int, chosen: int, rejected: int, shape: dict[str, int],
               forwards: int, *, head: bool = True) -> float:
    """`forwards` forward passes' worth of one pair's least work (module docstring); head:
    whether response tokens go through the output projection (dpo) or not (rm)."""
    body = shape["body_parameters"]
    attention = (prompt + chosen) ** 2 + (prompt + rejected) ** 2 - prompt**2
    forward = 2 * body * (prompt + chosen + rejected) \
        + 2 * shape["layers"] * shape["hidden_size"] * attention
    if head:
        forward += 2 * shape["head_parameters"] * (chosen + rejected)
    return forwards * forward


def conversation_flops(tokens: int, scored: int, shape: dict[str, int], forwards: int) -> float:
    """`forwards` forward passes' worth of one conversation's least work (module docstring)."""
    forward = 2 * shape["body_parameters"] * tokens + 2 * shape["head_parameters"] * scored \
        + 2 * shape["layers"] * shape["hidden_size"] * tokens**2
    return forwards * forward


def example_tokens(task: str, lengths: list[int]) -> int:
    """The real tokens of an example's sequences (a pair's prompt counted twice, no padding)."""
    if task == "sft":
        return lengths[0]
    prompt, chosen, rejected = lengths
    return 2 * prompt + chosen + rejected


def run_flops(task: str, lengths: list[list[list[int]]], shape: dict[str, int],
              lora: bool) -> dict:
    """Model FLOPs of a whole run, both counts (training, and dpo's reference forward)."""
    forwards = (2 if lora else 3) + (1 if task == "dpo" else 0)
    examples = [example for step in lengths for example in step]
    if task == "sft":
        least = sum(conversation_flops(t, s, shape, forwards) for t, s in examples)
    else:
        least = sum(pair_flops(p, c, r, shape, forwards, head=task == "dpo")
                    for p, c, r in examples)
    tokens = sum(example_tokens(task, example) for example in examples)
    weights = shape["body_parameters"] + (0 if task == "rm" else shape["head_parameters"])
    return {"least": least, "6nt": 2 * forwards * weights * tokens}


def best_peaks(results: list[dict[str, Any]]) -> dict[str, float]:
    """The machine's matmul peak per precision: the best any worker measured (others ran
    under whatever else loaded the machine at that moment)."""
    return {dtype: max(r["peak_flops"][dtype] for r in results) for dtype in ("float32", "bfloat16")}


def summarize(result: dict[str, Any], *, task: str, lora: bool, bf16: bool,
              peaks: dict[str, float]) -> dict[str, Any]:
    """Throughput, memory, MFU and losses of one run (a TRL or prefalign worker's result).

    Training steps: every step but the first (warm-up: first-call allocations and kernel
    selection). All in: every step plus any reference pass done before step 1. Tokens are the
    real tokens of every example's sequences (`example_tokens`: no padding).
    """
    seconds, lengths = result["step_seconds"], result["example_lengths"]
    timed = slice(1, None) if len(seconds) > 1 else slice(0, None)
    examples = [len(step) for step in lengths]  # a short last batch when TRL dropped pairs
    tokens = [sum(example_tokens(task, example) for example in step) for step in lengths]
    train_seconds = sum(seconds[timed])
    all_in_seconds = sum(seconds) + result.get("reference_seconds", 0.0)
    flops = run_flops(task, lengths, result["shape"], lora)
    peak = peaks["bfloat16" if bf16 else "float32"]
    losses = result["losses"]
    return {
        "steps": len(seconds), "examples": sum(examples),
        "train_examples_per_s": sum(examples[timed]) / train_seconds,
        "all_in_examples_per_s": sum(examples) / all_in_seconds,
        "tokens_per_s": sum(tokens[timed]) / train_seconds,
        "peak_rss_mib": result["peak_rss_mib"],
        "model_flops_per_s": flops["least"] / all_in_seconds,
        "mfu": flops["least"] / all_in_seconds / peak,
        "mfu_6nt": flops["6nt"] / all_in_seconds / peak,
        "train_seconds": train_seconds, "all_in_seconds": all_in_seconds,
        "reference_seconds": result.get("reference_seconds", 0.0),
        "step1_loss": losses[0] if losses else math.nan,
        "losses": losses[:LOSSES_SHOWN],
        "step1_values": {name: result[name][0] for name in STEP_VALUES[task]} if losses else {},
    }


def ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """prefalign / TRL for speed, memory and MFU; loss differences against TRL."""
    shown = min(len(ours["losses"]), len(theirs["losses"]))
    differences = [abs(a - b) for a, b in zip(ours["losses"][:shown], theirs["losses"][:shown],
                                                strict=True)]
    relative = [d / abs(b) if b else math.inf if d else 0.0  # a GRPO loss can be exactly 0
                for d, b in zip(differences, theirs["losses"], strict=False)]
    values = [abs(ours["step1_values"][name] - theirs["step1_values"][name])
              for name in ours["step1_values"] if name in theirs["step1_values"]]
    return {
        "train_examples_per_s": ours["train_examples_per_s"] / theirs["train_examples_per_s"],
        "all_in_examples_per_s": ours["all_in_examples_per_s"] / theirs["all_in_examples_per_s"],
        "tokens_per_s": ours["tokens_per_s"] / theirs["tokens_per_s"],
        "peak_rss": ours["peak_rss_mib"] / theirs["peak_rss_mib"],
        "mfu": ours["mfu"] / theirs["mfu"],
        "step1_loss_abs_difference": differences[0] if differences else math.nan,
        "step1_loss_relative_difference": relative[0] if relative else math.nan,
        "losses_max_abs_difference": max(differences, default=math.nan),
        "losses_max_relative_difference": max(relative, default=math.nan),
        "step1_values_abs_difference": max(values, default=math.nan),
    }


def _row(cells: list[str]) -> str:
    widths = (19, 10, 7, 14, 15, 9, 13, 7, 12)  # the longest config name, full-bf16-policyref
    return "  ".join(f"{cell:<{w}}" if i < 3 else f"{cell:>{w}}"
                     for i, (cell, w) in enumerate(zip(cells, widths, strict=True)))


def format_table(entries: list[dict[str, Any]], comparisons: list[dict[str, Any]]) -> str:
    """One row per run, then one ratio row (prefalign / TRL) per TRL run."""
    lines = [_row(["config", "side", "tokens", "train ex/s", "all-in ex/s", "tokens/s",
                   "peak RSS MiB", "MFU", "step-1 loss"])]
    for entry in entries:
        s = entry["summary"]
        lines.append(_row([entry["config"], entry["side"], entry["tokens"],
                           f"{s['train_examples_per_s']:.4f}",
                           f"{s['all_in_examples_per_s']:.4f}",
                           f"{s['tokens_per_s']:.1f}", f"{s['peak_rss_mib']:.0f}",
                           _percent(s["mfu"]), f"{s['step1_loss']:.6f}"]))
    for comparison in comparisons:
        r = comparison["ratios"]
        lines.append(_row([comparison["config"], "ratio", comparison["tokens"],
                           f"{r['train_examples_per_s']:.2f}x",
                           f"{r['all_in_examples_per_s']:.2f}x",
                           f"{r['tokens_per_s']:.2f}x", f"{r['peak_rss']:.2f}x",
                           "-" if math.isnan(r["mfu"]) else f"{r['mfu']:.2f}x",
                           f"rel {r['step1_loss_relative_difference']:.1e}"]))
    return "\n".join(lines)


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1%}"


def format_losses(entries: list[dict[str, Any]], comparisons: list[dict[str, Any]]) -> str:
    """The first losses of each run, and how far prefalign's are from each TRL run's."""
    lines = []
    for config in dict.fromkeys(entry["config"] for entry in entries):
        lines.append(f"{config}: first {LOSSES_SHOWN} losses")
        task = next(e["task"] for e in entries if e["config"] == config)
        for entry in (e for e in entries if e["config"] == config):
            label = f"{entry['side']} ({entry['tokens']})"
            values = " ".join(f"{loss:.6f}" for loss in entry["summary"]["losses"])
            lines.append(f"  {label:<20} {values}")
        for comparison in (c for c in comparisons if c["config"] == config):
            r = comparison["ratios"]
            lines.append(f"  prefalign vs trl ({comparison['tokens']}): step-1 |Δloss| "
                         f"{r['step1_loss_abs_difference']:.2e}, max |Δloss| "
                         f"{r['losses_max_abs_difference']:.2e}, max relative "
                         f"{r['losses_max_relative_difference']:.2e}; step-1 "
                         f"{STEP_VALUE_WORDS[task]} differ by "
                         f"{r['step1_values_abs_difference']:.2e}")
    return "\n".join(lines)


def format_checks(entries: list[dict[str, Any]]) -> str:
    """Whether TRL saw the planned batches in order, and how steady the machine was."""
    lines = []
    for entry in (e for e in entries if e["side"] == "trl"):
        result = entry["result"]
        verdict = "in the planned order" if result["order_verified"] else \
            "NOT the planned batches (see tokenisation: TRL drops pairs whose prompt fills max_length)"
        lines.append(f"{entry['config']} trl ({entry['tokens']}): {result['rows_after_preparation']} "
                     f"examples after TRL's preparation, trained {verdict}")
        if "reward_head_digest" in result:
            ours = next(e["result"] for e in entries
                        if e["config"] == entry["config"] and e["side"] == "prefalign")
            same = result["reward_head_digest"] == ours.get("reward_head_digest")
            lines.append(f"{entry['config']} trl ({entry['tokens']}): reward head "
                         f"{'the same as' if same else 'NOT the same as'} prefalign's at the start")
    for dtype in ("float32", "bfloat16"):
        peaks = [e["result"]["peak_flops"][dtype] / 1e9 for e in entries]
        if max(peaks) > 1.2 * min(peaks):
            lines.append(f"warning: the {dtype} matmul peak ranged {min(peaks):.0f}-{max(peaks):.0f} "
                         "GFLOP/s across runs: the machine was busy, timings are unreliable")
    return "\n".join(lines)
