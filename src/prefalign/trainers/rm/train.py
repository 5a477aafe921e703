"""`prefalign rm train`: a reward model on the shared loop."""

from __future__ import annotations

from prefalign.config import Config
from prefalign.trainers.loop.loop import RunResult
from prefalign.trainers.loop.loop import train as train_with
from prefalign.trainers.rm.method import RmMethod


def train_rm(config: Config, *, resume: bool = False, tune_process: bool = False) -> RunResult:
    """Train `config`'s reward model on its preference pairs in `run.output_dir/run.name`;
    `resume` continues its checkpoint; `tune_process` as in `trainers.loop.loop.train`.
    `final/` loads with `AutoModelForSequenceClassification.from_pretrained` (num_labels 1)."""
    return train_with(config, RmMethod(config), resume=resume, tune_process=tune_process)
