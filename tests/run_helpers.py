"""Tiny preference data sets and run configurations for the training tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from prefalign.config import Config, config_from_dict
from prefalign.engine.logger import read_metrics

_TOPICS = ["the capital of France", "a cat joke", "how a bicycle works", "the quick brown fox",
           "a number", "the weather", "your day", "a good book", "the sea", "an egg"]


def pair_rows(n: int = 24) -> list[dict[str, str]]:
    """n distinct pairs: a polite chosen reply and a rude rejected one whose lengths vary, so
    the chosen reply is sometimes the shorter, sometimes the longer, sometimes as long."""
    rows = []
    for i in range(n):
        topic = _TOPICS[i % len(_TOPICS)]
        polite = "Thank you for asking. " * (1 + i % 3) + f"Here is {topic}."
        rude = "No, I will not. " * ((i * 7) % 4) + f"Not {topic}."
        rows.append({"prompt": f"Tell me about {topic}, please ({i}).",
                     "chosen": polite, "rejected": rude})
    return rows


def write_pairs(path: Path, n: int = 24, rows: list[dict[str, Any]] | None = None) -> Path:
    """Write JSONL rows (default: n TRL-format prompt / chosen / rejected pairs); its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = pair_rows(n) if rows is None else rows
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def tiny_config(tmp_path: Path, model_source: Path | str, **sections: dict[str, Any]) -> Config:
    """A run on tiny data in tmp_path/runs; `sections` update the defaults section by section."""
    train = write_pairs(tmp_path / "data" / "train.jsonl", 24)
    heldout = write_pairs(tmp_path / "data" / "eval.jsonl", rows=pair_rows(36)[24:])
    raw: dict[str, dict[str, Any]] = {
        "run": {"name": "tiny", "output_dir": str(tmp_path / "runs"), "seed": 0},
        "model": {"source": str(model_source)},
        "data": {"train": [str(train)], "eval": [str(heldout)], "max_length": 128},
        "loss": {"name": "dpo", "params": {"beta": 0.1}},
        "reference": {"strategy": "frozen_copy"},
        "optim": {"lr": 1e-3, "schedule": "constant"},
        "train": {"batch_size": 4, "grad_accum": 1, "max_steps": 4, "threads": 1},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw)


def conversation_rows(n: int = 24) -> list[dict[str, Any]]:
    """n distinct TRL `messages` conversations; every third has two assistant turns and every
    fourth a system prompt, so packing sees several lengths and label spans."""
    rows = []
    for i in range(n):
        topic = _TOPICS[i % len(_TOPICS)]
        messages = [{"role": "user", "content": f"Tell me about {topic} ({i})."},
                    {"role": "assistant", "content": "Gladly. " * (1 + i % 3) + f"It is {topic}."}]
        if i % 3 == 0:
            messages += [{"role": "user", "content": "And more?"},
                         {"role": "assistant", "content": f"More on {topic}, then."}]
        if i % 4 == 0:
            messages.insert(0, {"role": "system", "content": "Answer briefly."})
        rows.append({"messages": messages})
    return rows


def sft_config(tmp_path: Path, model_source: Path | str, **sections: dict[str, Any]) -> Config:
    """An SFT run on tiny conversations in tmp_path/runs (sections update the defaults)."""
    rows = conversation_rows(36)
    train = write_pairs(tmp_path / "data" / "sft-train.jsonl", rows=rows[:24])
    heldout = write_pairs(tmp_path / "data" / "sft-eval.jsonl", rows=rows[24:])
    raw: dict[str, dict[str, Any]] = {
        "run": {"name": "tiny-sft", "output_dir": str(tmp_path / "runs"), "seed": 0},
        "model": {"source": str(model_source)},
        "data": {"train": [str(train)], "eval": [str(heldout)], "max_length": 128},
        "optim": {"lr": 1e-3, "schedule": "constant"},
        "train": {"batch_size": 4, "grad_accum": 1, "max_steps": 4, "threads": 1},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw)


SMALL_LR = {"lr": 1e-4, "schedule": "constant"}  # optim overrides: updates too small to diverge


def logged_losses(run_dir: Path, split: str = "train") -> list[float]:
    return [line["loss"] for line in read_metrics(run_dir) if line["split"] == split]


def final_weights(run_dir: Path) -> dict[str, Any]:
    final = run_dir / "final"
    name = "adapter_model" if (final / "adapter_model.safetensors").exists() else "model"
    return load_file(str(final / f"{name}.safetensors"))


def max_weight_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    assert a.keys() == b.keys()
    return max((a[name] - b[name]).abs().max().item() for name in a)
