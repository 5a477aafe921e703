"""Tiny prompt files, judge modules and GRPO configs for the grpo tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefalign.config import Config, config_from_dict

JUDGES = '''
def length(prompts, completions, **columns):
    return [float(len(c[0]["content"])) for c in completions]


def constant(prompts, completions, **columns):
    return [1.0 for _ in completions]
'''


def write_prompts(path: Path, n: int = 8) -> Path:
    """n prompts, alternately harmful and benign (`kind`), each with an id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"p{i}", "prompt": f"Tell me about the sea, please ({i}).",
             "kind": "harmful" if i % 2 else "benign"} for i in range(n)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def judge_file(tmp_path: Path) -> Path:
    path = tmp_path / "judges" / "tiny_judges.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(JUDGES, encoding="utf-8")
    return path


def grpo_config(tmp_path: Path, model_source: Path | str, **sections: dict[str, Any]) -> Config:
    """A GRPO run on 8 tiny prompts, G=2, 6 new tokens, the length judge (varied rewards)."""
    raw: dict[str, dict[str, Any]] = {
        "run": {"name": "tiny-grpo", "output_dir": str(tmp_path / "runs"), "seed": 0},
        "model": {"source": str(model_source)},
        "grpo": {"prompts": str(write_prompts(tmp_path / "data" / "prompts.jsonl")),
                 "group_size": 2, "max_new_tokens": 6,
                 "judges": [f"{judge_file(tmp_path)}:length"]},
        "optim": {"lr": 1e-3, "schedule": "constant"},
        "train": {"batch_size": 2, "grad_accum": 1, "max_steps": 2, "threads": 1},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw)
