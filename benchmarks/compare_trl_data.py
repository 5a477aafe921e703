"""compare_trl.py's inputs: one model directory for both sides, prefalign's config, the pairs
in prefalign's training order (written for TRL), and what differs in TRL's own tokenisation.

    .venv/bin/python benchmarks/compare_trl_data.py export MODEL   # prints the model directory

`export` runs in a child process of compare_trl.py, so the parent never holds the weights.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefalign.config import Config, load_config
from prefalign.data.tokenize import TokenizedPair
from prefalign.data.types import PreferencePair

_COMPLETE = "COMPLETE"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class Setup:
    """One benchmark configuration: the trainer compared (`task`: dpo against DPOTrainer, sft
    against SFTTrainer, rm against RewardTrainer, grpo against GRPOTrainer) and what differs
    between configurations."""

    lora: bool
    bf16: bool
    lr: float  # the same on both sides; constant, no warm-up
    reference_precision: str = "full"  # prefalign's reference.precision (dpo only)
    task: str = "dpo"


CONFIGS = {
    "full-fp32": Setup(lora=False, bf16=False, lr=1e-6),
    "lora-fp32": Setup(lora=True, bf16=False, lr=5e-5),
    "full-bf16": Setup(lora=False, bf16=True, lr=1e-6),
    "full-bf16-policyref": Setup(lora=False, bf16=True, lr=1e-6, reference_precision="policy"),
    "sft": Setup(lora=False, bf16=False, lr=1e-5, task="sft"),
    "rm": Setup(lora=False, bf16=False, lr=1e-5, task="rm"),
    "grpo": Setup(lora=False, bf16=False, lr=1e-6, task="grpo"),  # compare_trl_grpo.py
}
DEFAULT_CONFIGS = [name for name in CONFIGS if name != "grpo"]  # grpo: only when named
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


# ----------------------------------------------------------------------------- model


def export_model(source: str) -> Path:
    """A Hugging Face directory (safetensors weights, tokenizer, chat template) of `source`.

    A local directory that already holds both is used as it is. Anything else (the alias, a
    GGUF file) is loaded the way prefalign loads it, dequantized to float32, and saved once
    under $PREFALIGN_CACHE/compare-trl/, so TRL and prefalign read the very same files.
    """
    from prefalign.sources import resolve_model_source

    resolved = resolve_model_source(source)
    if resolved.gguf_file is None and _is_complete_hf_dir(resolved.path):
        return resolved.path
    target = _export_dir(source)
    if (target / _COMPLETE).is_file():
        return target
    _write_export(source, target)
    return target


def _is_complete_hf_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors")) \
        and all((path / name).is_file() for name in _TOKENIZER_FILES)


def _export_dir(source: str) -> Path:
    from prefalign.data.tokenizer import cache_root, gguf_cache_key
    from prefalign.sources import resolve_model_source

    resolved = resolve_model_source(source)
    identity = str(gguf_cache_key(resolved.gguf_path)) if resolved.gguf_path else str(resolved.path)
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", resolved.display_name).strip("-")[-40:]
    return cache_root() / "compare-trl" / f"{slug}-{digest}"


def _write_export(source: str, target: Path) -> None:
    from transformers import AutoTokenizer

    from prefalign.config import ModelSection
    from prefalign.data.tokenizer import load_tokenizer
    from prefalign.engine.models.load import load_base_model

    model = load_base_model(ModelSection(source=source, dtype="float32"))
    tokenizer = load_tokenizer(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        reloaded = AutoTokenizer.from_pretrained(str(staging), local_files_only=True)
        probe = [{"role": "user", "content": "Is this the same tokenizer?"},
                 {"role": "assistant", "content": "It should be."}]
        if reloaded.apply_chat_template(probe) != tokenizer.apply_chat_template(probe):
            raise RuntimeError(f"{source}: the saved tokenizer does not reproduce the original's ids")
        (staging / _COMPLETE).write_text("ok\n", encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        staging.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------- prefalign config


def prefalign_overrides(setup: Setup, *, model_dir: Path, run_root: Path, data: str, seed: int,
                        steps: int, batch_size: int, max_length: int, beta: float, lr: float,
                        reference: str, gradient_checkpointing: bool,
                        extra: list[str]) -> list[str]:
    """`section.key=value` overrides (over prefalign's defaults) for one benchmark run."""
    values: dict[str, Any] = {
        "run.name": "prefalign", "run.output_dir": str(run_root), "run.seed": seed,
        "model.source": str(model_dir), "model.dtype": "float32",
        "train.autocast": "bfloat16" if setup.bf16 else "off",
        "model.gradient_checkpointing": gradient_checkpointing,
        "lora.enabled": setup.lora, **{f"lora.{key}": value for key, value in LORA.items()},
        "data.train": [data], "data.eval": [], "data.max_length": max_length,
        "data.limit_train": steps * batch_size,
        "optim.lr": lr, "optim.warmup_steps": 0, "optim.schedule": "constant",
        "optim.weight_decay": 0.0, "optim.max_grad_norm": 1.0,
        "train.batch_size": batch_size, "train.grad_accum": 1, "train.max_steps": steps,
        "train.eval_every": 0, "train.eval_batch_size": 2, "train.save_every": 0,
        "train.keep_last": 1, "train.log_every": 1,
    }
    if setup.task == "dpo":
        values.update({"loss.name": "dpo", "loss.params.beta": beta,
                       "reference.strategy": reference,
                       "reference.cache": str(run_root / "reference-cache"),
                       "reference.precision": setup.reference_precision})
    elif setup.task == "sft":
        # a few hh-rlhf transcripts have two assistant turns in a row: left out, as
        # configs/sft.yaml does, rather than stopping the run
        values["data.on_error"] = "skip"
    # JSON is YAML, so every value reads back exactly (paths with colons included)
    return [f"{key}={json.dumps(value)}" for key, value in values.items()] + list(extra)


def training_order(config: Config, split_size: int) -> list[int]:
    """Split positions of every optimiser step's examples, in order, as the shared loop visits
    them (trainers/loop/batches.py)."""
    from prefalign.trainers.loop.batches import (
        epoch_permutation,
        global_batch_size,
        micro_batch_indices,
        steps_per_epoch,
    )

    per_epoch = steps_per_epoch(split_size, global_batch_size(config, 1))
    if per_epoch == 0:
        raise SystemExit(f"{split_size} examples do not fill one batch of {config.train.batch_size}")
    order: list[int] = []
    for step in range(config.train.max_steps or 0):
        epoch, step_in_epoch = divmod(step, per_epoch)
        permutation = epoch_permutation(split_size, config.run.seed, epoch)
        for micro in micro_batch_indices(permutation, step_in_epoch,
                                         batch_size=config.train.batch_size,
                                         grad_accum=config.train.grad_accum):
            order += micro.tolist()
    return order


def planned_pairs(overrides: list[str]) -> tuple[Config, list[PreferencePair], list[TokenizedPair]]:
    """The pairs of every optimiser step, in order, exactly as prefalign's train() visits them
    (DPO and the reward model share these splits)."""
    from prefalign.data.tokenizer import load_tokenizer
    from prefalign.engine.pair_splits import prepare_splits

    config = load_config(None, overrides)
    split = prepare_splits(config, load_tokenizer(config.model.source))["train"]
    order = training_order(config, len(split))
    return config, [split.pairs[i] for i in order], [split.tokenized[i] for i in order]


def write_trl_rows(path: Path, pairs: list[PreferencePair], tokenized: list[TokenizedPair]) -> None:
    """One JSONL row per pair in training order: TRL's conversational prompt/chosen/rejected and,
    for --tokens same, the exact ids prefalign trains on (prompt_ids/chosen_ids/rejected_ids)."""
    with open(path, "w", encoding="utf-8") as handle:
        for index, (pair, tokens) in enumerate(zip(pairs, tokenized, strict=True)):
            row = {
                "pair_index": index,
                "prompt": [message.to_dict() for message in pair.prompt],
                "chosen": [{"role": "assistant", "content": pair.chosen}],
                "rejected": [{"role": "assistant", "content": pair.rejected}],
                "prompt_ids": list(tokens.prompt_ids),
                "chosen_ids": list(tokens.chosen_ids),
                "rejected_ids": list(tokens.rejected_ids),
            }
            handle.write(json.dumps(row) + "\n")


def pair_lengths(tokenized: list[TokenizedPair], batch_size: int) -> list[list[list[int]]]:
    """Per step, each pair's [prompt, chosen, rejected] token counts."""
    lengths = [[len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)] for p in tokenized]
    return [lengths[start : start + batch_size] for start in range(0, len(lengths), batch_size)]


def packed_positions(tokenized: list[TokenizedPair], batch_size: int) -> list[int]:
    """Per step, the positions prefalign's packed scorer runs the decoder on (prefix once)."""
    from prefalign.engine.forward.packed_layout import PairTokens

    lengths = [PairTokens.from_tokenized(p).segment_length for p in tokenized]
    return [sum(lengths[start : start + batch_size]) for start in range(0, len(lengths), batch_size)]


# ----------------------------------------------------------------------------- tokenisation


def tokenization_differences(tokenized: list[TokenizedPair], trl_rows: list[dict[str, Any]],
                             *, max_length: int, tokenizer_dir: Path) -> dict[str, Any]:
    """How the sequences TRL tokenised itself differ from prefalign's, pair by pair.

    trl_rows: {"pair_index", "prompt_ids", "chosen_ids", "rejected_ids"} as TRL's dataset holds
    them; its collator then keeps the first `max_length` tokens of prompt + response.
    """
    from prefalign.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(str(tokenizer_dir))
    kinds: dict[str, int] = {}
    examples: dict[str, dict[str, Any]] = {}
    kept = {row["pair_index"]: row for row in trl_rows}
    for index, ours in enumerate(tokenized):
        row = kept.get(index)
        kind = "dropped by TRL (prompt fills max_length)" if row is None else \
            _difference(ours, row, max_length)
        kinds[kind] = kinds.get(kind, 0) + 1
        if row is not None and kind not in examples:
            examples[kind] = _example(tokenizer, ours, row, index)
    return {"pairs": len(tokenized), "kinds": kinds, "examples": examples}


def _difference(ours: TokenizedPair, row: dict[str, Any], max_length: int) -> str:
    prompt = list(row["prompt_ids"])
    responses = {}
    for side in ("chosen", "rejected"):
        full = (prompt + list(row[f"{side}_ids"]))[:max_length]  # the collator's keep_start
        responses[side] = full[len(prompt):]
    prompt = prompt[:max_length]
    same_prompt = tuple(prompt) == ours.prompt_ids
    if same_prompt and all(tuple(responses[s]) == ours.response_ids(s) for s in responses):
        return "identical"
    one_more = all(tuple(responses[s][:-1]) == ours.response_ids(s)
                   and len(responses[s]) == len(ours.response_ids(s)) + 1 for s in responses)
    if same_prompt and one_more:
        return "TRL adds one token after the end-of-turn token"
    if ours.truncated or len(prompt) + max(len(r) for r in responses.values()) >= max_length:
        return "truncated differently (TRL keeps the start, prefalign the prompt's end)"
    return "other"


def _example(tokenizer: Any, ours: TokenizedPair, row: dict[str, Any], index: int) -> dict[str, Any]:
    def tail(ids: Any) -> list[str]:
        return [tokenizer.decode([i]) for i in list(ids)[-3:]]

    return {"pair_index": index,
            "prompt_tokens": {"prefalign": len(ours.prompt_ids), "trl": len(row["prompt_ids"])},
            "chosen_tokens": {"prefalign": len(ours.chosen_ids), "trl": len(row["chosen_ids"])},
            "chosen_ends": {"prefalign": tail(ours.chosen_ids), "trl": tail(row["chosen_ids"])},
            "prompt_starts": {"prefalign": tokenizer.decode(list(ours.prompt_ids[:12])),
                              "trl": tokenizer.decode(list(row["prompt_ids"][:12]))}}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "export":
        print("usage: compare_trl_data.py export MODEL", file=sys.stderr)
        return 2
    print(export_model(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
