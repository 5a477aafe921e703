"""A two-round loop config on a tiny real model: four prompts, three samples of a few tokens each,
a length judge, one DPO step per round and a small evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from loop.loop_files import LENGTH_JUDGE, PROMPTS, write_jsonl
from run_helpers import pair_rows, write_pairs

SMALL_EVAL = {"max_pairs": 4, "harmful": 2, "benign": 2, "kl_prompts": 2, "helpful_pairs": 2,
              "template_pairs": 2, "batch_size": 4,
              "decoding": {"max_new_tokens": 4, "batch_size": 4}}


def loop_files(tmp_path: Path) -> dict[str, Path]:
    """prompts.jsonl, judges.py (length) and held-out pairs under tmp_path/inputs."""
    inputs = tmp_path / "inputs"
    judges = inputs / "judges.py"
    prompts = write_jsonl(inputs / "prompts.jsonl", PROMPTS)
    judges.write_text(LENGTH_JUDGE, encoding="utf-8")
    heldout = write_pairs(inputs / "heldout.jsonl", rows=pair_rows(8))
    return {"prompts": prompts, "judges": judges, "heldout": heldout}


def loop_config(tmp_path: Path, model_dir: Path, name: str = "loop",
                **changes: Any) -> dict[str, Any]:
    """The loop config as a dict; `changes` replace top-level keys."""
    files = loop_files(tmp_path)
    config: dict[str, Any] = {
        "name": name,
        "output_dir": str(tmp_path / "loops"),
        "rounds": 2,
        "model": str(model_dir),
        "reference": "original",
        "prompts": [str(files["prompts"])],
        "sampling": {"n": 3, "max_new_tokens": 6, "temperature": 1.0, "seed": 0},
        "pairs": {"judges": [f"{files['judges']}:length"]},
        "train": {"settings": {
            "data": {"eval": [], "max_length": 128},
            "optim": {"lr": 1e-3, "schedule": "constant"},
            "train": {"batch_size": 2, "max_steps": 1, "threads": 1, "report_to": []}}},
        "eval": {**SMALL_EVAL, "pairs": [str(files["heldout"])]},
    }
    config.update(changes)
    return config


def write_yaml(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def pair_keys(path: Path) -> list[tuple]:
    """What a pair file says, without the paths its provenance names."""
    return [(row["id"], json.dumps(row["chosen"]), json.dumps(row["rejected"]),
             row["chosen_score"], row["rejected_score"], row["round"],
             row["metadata"]["generator"]["weight_hash"]) for row in read_jsonl(path)]
