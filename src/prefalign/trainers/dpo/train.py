"""`prefalign train`: DPO (or the configured preference loss) on the shared loop."""

from __future__ import annotations

from prefalign.config import Config
from prefalign.trainers.dpo.method import DpoMethod
from prefalign.trainers.loop.loop import RunResult
from prefalign.trainers.loop.loop import train as train_with


def train(config: Config, *, resume: bool = False,
          tune_process: bool = False) -> RunResult:
    """Train `config`'s policy against its reference in `run.output_dir/run.name`; `resume`
    continues its checkpoint; `tune_process` as in `trainers.loop.loop.train`."""
    return train_with(config, DpoMethod(config), resume=resume, tune_process=tune_process)
