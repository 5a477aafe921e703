"""`prefalign grpo`: online RL (GRPO, Dr. GRPO, DAPO, RLOO) on the shared loop."""

from __future__ import annotations

from prefalign.config import Config
from prefalign.trainers.grpo.method import GrpoMethod
from prefalign.trainers.loop.loop import RunResult
from prefalign.trainers.loop.loop import train as train_with


def train_grpo(config: Config, *, resume: bool = False,
               tune_process: bool = False) -> RunResult:
    """Train `config`'s policy on its sampled, judged completions in `run.output_dir/run.name`;
    `resume` continues its checkpoint; `tune_process` as in `trainers.loop.loop.train`. Bad
    config, prompt files and judges fail here, before any model loads."""
    return train_with(config, GrpoMethod(config), resume=resume, tune_process=tune_process)
