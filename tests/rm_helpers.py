"""Reward-model runs on tiny data for the trainer and `prefalign rm` tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefalign.config import Config, config_from_dict
from run_helpers import pair_rows, write_pairs


def rm_config(tmp_path: Path, model_source: Path | str, *, margins: list[Any] | None = None,
              **sections: dict[str, Any]) -> Config:
    """A reward-model run on 24 training and 12 held-out tiny pairs in tmp_path/runs;
    `margins` gives the training rows a `margin` field each (None leaves a row without);
    `sections` update the defaults section by section."""
    rows = pair_rows(36)
    train_rows = rows[:24]
    if margins is not None:
        train_rows = [row if margin is None else {**row, "margin": margin}
                      for row, margin in zip(train_rows, margins, strict=True)]
    train = write_pairs(tmp_path / "data" / "rm-train.jsonl", rows=train_rows)
    heldout = write_pairs(tmp_path / "data" / "rm-eval.jsonl", rows=rows[24:])
    raw: dict[str, dict[str, Any]] = {
        "run": {"name": "tiny-rm", "output_dir": str(tmp_path / "runs"), "seed": 0},
        "model": {"source": str(model_source)},
        "data": {"train": [str(train)], "eval": [str(heldout)], "max_length": 128},
        "optim": {"lr": 1e-3, "schedule": "constant"},
        "train": {"batch_size": 4, "grad_accum": 1, "max_steps": 4, "threads": 1},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw)
