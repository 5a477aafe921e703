"""Paths of the data sets shipped inside the package (see resources/data/ATTRIBUTION.md)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

_DATA = files("prefalign") / "resources" / "data"

BUNDLED = {
    "hh-harmless-train": "hh_rlhf_harmless_train.jsonl.gz",
    "hh-harmless-heldout": "hh_rlhf_harmless_heldout.jsonl.gz",
    "examples": "accepted_rejected_examples.jsonl",
    "hh-helpful-sample": "hh_rlhf_helpful_sample.jsonl.gz",
    "tone-train": "tone_train.jsonl.gz",
    "tone-heldout": "tone_heldout.jsonl.gz",
    "hh-helpful-train": "hh_rlhf_helpful_train.jsonl.gz",
    "hh-helpful-heldout": "hh_rlhf_helpful_heldout.jsonl.gz",
    # Prompt files (not pairs): the GRPO safety recipe's (configs/grpo-safety.yaml)
    "grpo-safety-train": "grpo_safety_train.jsonl",
    "grpo-safety-heldout": "grpo_safety_heldout.jsonl",
}


def bundled_path(name: str) -> Path:
    """Filesystem path of a bundled data set, by its short name (see BUNDLED)."""
    if name not in BUNDLED:
        raise KeyError(f"unknown bundled data set {name!r}; choose one of {sorted(BUNDLED)}")
    return Path(str(_DATA / BUNDLED[name]))


def resolve_data_path(path_or_name: str) -> Path:
    """A user-given path, or `bundled:NAME` for a shipped data set."""
    if path_or_name.startswith("bundled:"):
        return bundled_path(path_or_name.removeprefix("bundled:"))
    return Path(path_or_name)
