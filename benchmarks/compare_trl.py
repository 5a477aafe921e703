"""prefalign against TRL 1.16's DPOTrainer, SFTTrainer, RewardTrainer and GRPOTrainer: same model,
data, order, batch, max length, precision and optimiser steps; examples/s, tokens/s, peak memory,
MFU and the losses of both, side by side.

    .venv/bin/python benchmarks/compare_trl.py --steps 10 --out runs/compare-trl.json
    .venv/bin/python benchmarks/compare_trl.py --configs grpo --steps 8 --out runs/compare-trl-grpo.json

Configurations (--configs): DPO (β --beta, sigmoid loss) against DPOTrainer: full-fp32 (full
fine-tune, float32), lora-fp32 (LoRA r=16, α=32 on q_proj,v_proj), full-bf16 (bfloat16 autocast
over float32 weights on both sides: TRL's bf16=True, prefalign's train.autocast=bfloat16, whose
reference log-probs stay float32) and full-bf16-policyref (the same, but prefalign's reference
runs under the same autocast as its policy, reference.precision=policy, as TRL's does);
sft (`prefalign sft`, full fine-tune, float32) against SFTTrainer; rm (`prefalign rm train`,
full fine-tune, float32) against RewardTrainer; grpo (`prefalign grpo`, full fine-tune, float32)
against GRPOTrainer, run only when named (`--configs grpo`; the default is every other one).
prefalign scores its reference 2 pairs per forward (train.eval_batch_size=2, measured fastest for
the float32 pass on a 2-core CPU; under autocast, 8 per forward measured ~10% faster, kept at 2 so
runs compare). Every configuration, both sides: batch --batch-size examples (pairs;
conversations for sft), no accumulation, AdamW (β 0.9/0.999, ε 1e-8, no weight decay), constant
learning rate without warm-up, gradient clipping at 1.0, dropout off, sequences of at most
--max-length tokens, the same LoRA A matrices (B starts at 0). The examples are the first
steps × batch-size of prefalign's training order for the seed (its shuffled, limited split
visited in its seeded permutation); TRL reads them from a JSONL in that order with its
sequential sampler, and its worker checks that it saw every batch in that order.

sft: the conversations are the chosen side of --data's pairs (prefalign's SFT data path: every
turn of the transcript, the preferred replies as assistant turns; transcripts that are not a
conversation are skipped), loss on every assistant turn. TRL gets prefalign's `input_ids` and its
loss mask as `completion_mask` (`completion_only_loss=True`) and pads each batch (its default:
no packing, no padding-free); prefalign packs the conversations into one row (block-diagonal
attention). Both losses are the summed NLL of the scored tokens over the step's count of them.
rm: TRL gets each pair's two sequences (prompt + reply) as `chosen_ids`/`rejected_ids` and pads
the 2B of them; prefalign computes each prompt once for both replies. Both rewards are the
`score` head at the last token that is not the pad token; TRL's head is overwritten with
prefalign's seeded initialisation before training (the table's checks say whether the two
heads matched), and both losses are the mean over pairs of −log σ(r⁺ − r⁻).

grpo: --batch-size prompts per step (default 4) × --group-size G completions (default 4) of at
most --max-new-tokens (default 48, the end-of-turn token included), sampled at temperature 1
without top-p or top-k; the prompts are the first steps × batch-size of --prompts (default
bundled:grpo-safety-train) in prefalign's seeded order, which TRL follows (RepeatSampler, no
shuffle) and prefalign's worker checks it sampled. Both sides: β = 0 (no reference), ε = 0.2,
μ = 1 (num_iterations), advantages (r − mean) / (std + 1e-4) over each group, the unbiased std
on both sides, Dr. GRPO normalisation (Σ tokens / (N·max-new-tokens), TRL's loss_type="dr_grpo":
with ρ = 1 GRPO's per-sequence mean makes every loss −mean(A) = 0), and the same reward function,
compare_trl_reward.kind_aware_reward (TRL's reward_funcs; prefalign's `module:function` judge).
prefalign runs first; TRL's step 1 samples as usual, then trains on prefalign's step-1
completion ids instead (where its prompt ids equal prefalign's), so the step-1 loss, mean −log π
of the sampled tokens and gradient norm compare on identical tokens; later steps sample on each
side's own random stream. Reported: completions/s over steps 2.. (generation + update) and all
in (every step), generated tokens/s, peak memory, losses, mean reward per step; no MFU.

--tokens (DPO): `same` feeds TRL prefalign's exact token ids (prompt_ids/chosen_ids/rejected_ids),
so the losses compare like for like; `native` lets TRL tokenise the conversational pairs itself
(as a TRL user would; the result names every way its sequences differ); `both` runs both.
sft, rm and grpo always run `same`.

Every run is its own process (peak resident memory is per process), TRL and prefalign taking
turns within each configuration. TRL lives in its own virtual environment (--trl-venv, built on
first use: torch first, from the same version as prefalign's, then trl 1.16 with the same
transformers, peft and accelerate as prefalign's); prefalign never depends on it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from compare_trl_common import read_json, write_json
from compare_trl_data import (
    CONFIGS,
    DEFAULT_CONFIGS,
    LORA,
    packed_positions,
    pair_lengths,
    planned_pairs,
    prefalign_overrides,
    tokenization_differences,
    write_trl_rows,
)
from compare_trl_grpo import DEFAULT_PROMPTS, format_grpo, prepare, run_grpo, summarize_grpo
from compare_trl_report import (
    best_peaks,
    format_checks,
    format_losses,
    format_table,
    ratios,
    summarize,
)
from compare_trl_sft_rm import (
    conversation_lengths,
    planned_conversations,
    rm_row,
    sft_row,
    write_rows,
)

HERE = Path(__file__).resolve().parent
TRL_SPEC = "trl==1.16.*"
SAME_AS_PREFALIGN = ("transformers", "peft", "accelerate")  # pinned in TRL's venv too


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=DEFAULT_CONFIGS)
    parser.add_argument("--steps", type=int, default=10, help="optimiser steps per run")
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="alias, .gguf file or local HF directory (default: %(default)s)")
    parser.add_argument("--data", default="bundled:hh-harmless-train")
    parser.add_argument("--out", type=Path, default=Path("runs/compare-trl.json"))
    parser.add_argument("--tokens", choices=("same", "native", "both"), default="both")
    parser.add_argument("--batch-size", type=int, default=4, help="examples per optimiser step "
                        "(pairs; sft: conversations; grpo: prompts)")
    parser.add_argument("--prompts", default=DEFAULT_PROMPTS, help="grpo's prompt file")
    parser.add_argument("--group-size", type=int, default=4, help="grpo: completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="grpo: completion cap")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lr", type=float, help="learning rate for every config "
                        "(default: 1e-6 DPO full fine-tunes and grpo, 5e-5 LoRA, 1e-5 sft and rm)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gradient-checkpointing", action="store_true", help="on both sides")
    parser.add_argument("--prefalign-reference", default="precomputed",
                        choices=("precomputed", "frozen_copy", "adapter_off"))
    parser.add_argument("--trl-precompute-ref", action="store_true",
                        help="TRL's precompute_ref_log_probs (default: reference forward per step)")
    parser.add_argument("--prefalign-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra prefalign config override, e.g. train.scorer=padded")
    parser.add_argument("--trl-venv", type=Path, default=HERE / ".venv-trl")
    parser.add_argument("--torch-spec", default=f"torch=={torch.__version__.split('+')[0]}")
    parser.add_argument("--torch-index", default="", help="pip options for torch, e.g. "
                        "'--index-url https://download.pytorch.org/whl/cu128'")
    parser.add_argument("--workdir", type=Path, help="keep run files here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be >= 1")
    return args


# ----------------------------------------------------------------------------- environments


def ensure_trl_venv(args: argparse.Namespace) -> Path:
    """TRL's virtual environment, built once (torch first, so pip never picks a CUDA build by
    itself) and rebuilt when the requirements change; returns its python."""
    python = args.trl_venv / "bin" / "python"
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in SAME_AS_PREFALIGN]
    wanted = [args.torch_spec, TRL_SPEC, *pins]
    stamp = args.trl_venv / ".compare-trl-requirements"
    if python.exists() and stamp.is_file() and stamp.read_text().split("\n") == wanted:
        return python
    print(f"building {args.trl_venv}: {' '.join(wanted)}", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(args.trl_venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, *shlex.split(args.torch_index), args.torch_spec], check=True)
    subprocess.run([*pip, args.torch_spec, *wanted[1:]], check=True)
    stamp.write_text("\n".join(wanted))
    return python


def export_model(model: str) -> Path:
    """The HF directory both sides load, written by a child process (see compare_trl_data)."""
    command = [sys.executable, str(HERE / "compare_trl_data.py"), "export", model]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return Path(output.strip().splitlines()[-1])


def worker_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", HF_DATASETS_CACHE=str(workdir / "datasets-cache"))
    return env


def run_worker(python: Path, script: str, spec: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Run one worker in a fresh process; its output goes to directory/log.txt."""
    directory.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "run_dir": str(directory / "run"), "result": str(directory / "result.json")}
    write_json(directory / "spec.json", spec)
    log = directory / "log.txt"
    print(f"  {directory.parent.name} {directory.name} ...", end=" ", flush=True)
    with open(log, "w", encoding="utf-8") as handle:
        code = subprocess.run([str(python), str(HERE / script), str(directory / "spec.json")],
                              stdout=handle, stderr=subprocess.STDOUT,
                              env=worker_env(directory.parent.parent)).returncode
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
        raise SystemExit(f"{script} failed (exit {code}); end of {log}:\n" + "\n".join(tail))
    shutil.rmtree(directory / "run", ignore_errors=True)  # checkpoints: gigabytes, not results
    result = read_json(directory / "result.json")
    print(f"{sum(result['step_seconds']):.1f} s in steps", flush=True)
    return result


# ----------------------------------------------------------------------------- the comparison


def base_spec(args: argparse.Namespace, name: str, model_dir: Path, data_file: Path) -> dict:
    setup = CONFIGS[name]
    return {"config": name, "task": setup.task, "model_dir": str(model_dir),
            "data_file": str(data_file),
            "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
            "beta": args.beta, "lr": args.lr if args.lr is not None else setup.lr,
            "seed": args.seed, "bf16": setup.bf16, "lora": LORA if setup.lora else None,
            "gradient_checkpointing": args.gradient_checkpointing,
            "trl_precompute_ref": args.trl_precompute_ref}


def overrides_for(args: argparse.Namespace, name: str, model_dir: Path, run_root: Path) -> list:
    setup = CONFIGS[name]
    return prefalign_overrides(
        setup, model_dir=model_dir, run_root=run_root, data=args.data, seed=args.seed,
        steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
        beta=args.beta, lr=args.lr if args.lr is not None else setup.lr,
        reference=args.prefalign_reference, gradient_checkpointing=args.gradient_checkpointing,
        extra=args.prefalign_set)


TRL_WORKERS = {"dpo": "compare_trl_trl.py", "sft": "compare_trl_trl_sft_rm.py",
               "rm": "compare_trl_trl_sft_rm.py"}


def token_modes(args: argparse.Namespace, task: str) -> list[str]:
    """The TRL runs of a configuration: sft and rm always take prefalign's ids (`same`)."""
    if task != "dpo":
        return ["same"]
    return ["same", "native"] if args.tokens == "both" else [args.tokens]


def run_config(args, name, model_dir, data_file, workdir, trl_python, plan) -> list[dict]:
    """TRL and prefalign taking turns on one configuration; each run's entry (no summary yet)."""
    spec = base_spec(args, name, model_dir, data_file)
    task = CONFIGS[name].task
    entries = []
    for i, tokens in enumerate(token_modes(args, task)):
        result = run_worker(trl_python, TRL_WORKERS[task], {**spec, "tokens": tokens},
                            workdir / name / f"trl-{tokens}")
        entries.append({"config": name, "task": task, "side": "trl", "tokens": tokens,
                        "result": result})
        if i == 0:  # prefalign between the TRL runs: the sides take turns
            directory = workdir / name / "prefalign"
            overrides = overrides_for(args, name, model_dir, directory / "run")
            result = run_worker(Path(sys.executable), "compare_trl_prefalign.py",
                                {**spec, "tokens": "own", "prefalign_overrides": overrides},
                                directory)
            result.update(plan)  # its examples per step are the planned ones, by construction
            entries.append({"config": name, "task": task, "side": "prefalign", "tokens": "own",
                            "result": result})
    return entries


def summarize_all(entries: list[dict]) -> list[dict]:
    """Each entry's summary (MFU against the best peak any run measured); the ratio rows."""
    peaks = best_peaks([entry["result"] for entry in entries])
    for entry in entries:
        setup = CONFIGS[entry["config"]]
        entry["summary"] = summarize_grpo(entry["result"]) if setup.task == "grpo" else \
            summarize(entry["result"], task=setup.task, lora=setup.lora, bf16=setup.bf16,
                      peaks=peaks)
    comparisons = []
    for name in dict.fromkeys(entry["config"] for entry in entries):
        ours = next(e for e in entries if e["config"] == name and e["side"] == "prefalign")
        comparisons += [{"config": name, "tokens": e["tokens"],
                         "ratios": ratios(ours["summary"], e["summary"])}
                        for e in entries if e["config"] == name and e["side"] == "trl"]
    return comparisons


def cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    path = Path("/proc/cpuinfo")
    fields: dict[str, str] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if not line.strip():
            break
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return fields


def machine(entries: list[dict[str, Any]]) -> dict[str, Any]:
    info = cpuinfo()
    cpu = info.get("model name", platform.processor())
    # "AMD EPYC" alone does not say which generation: family 25 is Zen 3/4, 26 Zen 5
    family = "/".join(info.get(field, "?") for field in ("cpu family", "model", "stepping"))
    memory = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:")), "0")
    versions = {e["side"]: e["result"]["versions"] for e in entries}
    peaks = {dtype: [f(e["result"]["peak_flops"][dtype] for e in entries) for f in (min, max)]
             for dtype in ("float32", "bfloat16")}
    return {"cpu": cpu, "cpu_family_model_stepping": family, "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "memory_gib": round(int(memory) / 2**20, 1), "platform": platform.platform(),
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "threads": {e["side"]: e["result"]["threads"] for e in entries},
            "peak_flops_min_max": peaks,  # each run's in runs[].result; the best is the peak
            "versions": versions}


def prepare_data(args, task: str, model_dir: Path, workdir: Path) -> tuple[Path, Any, dict]:
    """The examples of every step in prefalign's order, written for TRL; their lengths per
    step; (dpo) the tokenised pairs, for the native-tokenisation comparison; (grpo) the
    prompts of every step and their token ids (compare_trl_grpo.prepare)."""
    if task == "grpo":
        data_file, plan = prepare(args, model_dir, workdir)
        return data_file, None, plan
    name = next(n for n in args.configs if CONFIGS[n].task == task)
    overrides = overrides_for(args, name, model_dir, workdir / f"plan-{task}")
    data_file = workdir / f"{task}-rows.jsonl"
    if task == "sft":
        _, conversations = planned_conversations(overrides)
        write_rows(data_file, [sft_row(i, c) for i, c in enumerate(conversations)])
        lengths = conversation_lengths(conversations, args.batch_size)
        positions = [sum(tokens for tokens, _ in step) for step in lengths]  # packed, no padding
        return data_file, None, {"example_lengths": lengths, "computed_positions": positions}
    _, pairs, tokenized = planned_pairs(overrides)
    if task == "rm":
        write_rows(data_file, [rm_row(i, pair) for i, pair in enumerate(tokenized)])
    else:
        write_trl_rows(data_file, pairs, tokenized)
    plan = {"example_lengths": pair_lengths(tokenized, args.batch_size),
            "computed_positions": packed_positions(tokenized, args.batch_size)}
    return data_file, tokenized if task == "dpo" else None, plan


def native_tokenization(entries, tokenized, args, model_dir: Path) -> dict | None:
    """How TRL's own tokenisation differs from prefalign's (from the first native run; every
    native run tokenises the same pairs with the same tokenizer)."""
    rows = [e["result"].pop("tokenized") for e in entries if "tokenized" in e["result"]]
    if not rows:
        return None
    return tokenization_differences(tokenized, rows[0], max_length=args.max_length,
                                    tokenizer_dir=model_dir)


def print_report(args, entries, comparisons, tokenization, host: dict[str, Any]) -> None:
    peaks = ", ".join(f"{dtype} {low / 1e9:.0f}-{high / 1e9:.0f}"
                      for dtype, (low, high) in host["peak_flops_min_max"].items())
    print(f"\n{host['cpu']} (family/model/stepping {host['cpu_family_model_stepping']}), "
          f"{host['usable_cores']} cores; matmul peak GFLOP/s {peaks}")
    print(f"{args.steps} steps x {args.batch_size} examples (pairs; sft: conversations; grpo: "
          f"prompts x {args.group_size} completions) per run; "
          "training steps exclude "
          "step 1 (warm-up); all in = every step + any reference pass before step 1\n")
    print(format_table(entries, comparisons))
    print()
    print(format_losses(entries, comparisons))
    print(format_checks(entries))
    grpo = format_grpo(entries)
    if grpo:
        print(grpo)
    if tokenization is not None:
        print(f"\nTRL's own tokenisation against prefalign's ({tokenization['pairs']} pairs): "
              + json.dumps(tokenization["kinds"]))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    command = shlex.join([sys.executable, *sys.argv])
    trl_python = ensure_trl_venv(args)
    model_dir = export_model(args.model)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="compare-trl-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"model {model_dir}\nrun files in {workdir}", flush=True)
    prepared = {task: prepare_data(args, task, model_dir, workdir)
                for task in dict.fromkeys(CONFIGS[name].task for name in args.configs)}
    entries = []
    for name in args.configs:
        data_file, _, plan = prepared[CONFIGS[name].task]
        if name == "grpo":
            entries += run_grpo(args, model_dir, data_file, workdir, trl_python, plan, run_worker)
        else:
            entries += run_config(args, name, model_dir, data_file, workdir, trl_python, plan)
    tokenized = prepared["dpo"][1] if "dpo" in prepared else None
    comparisons = summarize_all(entries)
    tokenization = native_tokenization(entries, tokenized, args, model_dir)
    host = machine(entries)
    print_report(args, entries, comparisons, tokenization, host)
    settings = vars(args) | {"configs": {name: vars(CONFIGS[name]) for name in args.configs}}
    report = {"command": command, "machine": host, "settings": settings,
              "model_dir": str(model_dir), "runs": entries, "comparisons": comparisons,
              "tokenization": tokenization}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"\nsaved {args.out}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
