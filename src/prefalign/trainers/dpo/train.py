"""`prefalign train`: DPO (or the configured preference loss, KTO included) on the shared loop."""

from __future__ import annotations

from prefalign.config import Config
from prefalign.trainers.dpo.kto import KtoMethod
from prefalign.trainers.dpo.method import DpoMethod
from prefalign.trainers.loop.loop import RunResult
from prefalign.trainers.loop.loop import train as train_with


def train(config: Config, *, resume: bool = False,
          tune_process: bool = False) -> RunResult:
    """Train `config`'s policy against its reference in `run.output_dir/run.name`; `resume`
    continues its checkpoint; `tune_process` as in `trainers.loop.loop.train`."""
    return train_with(config, preference_method(config), resume=resume,
                      tune_process=tune_process)


def preference_method(config: Config) -> DpoMethod:
    """DPO and the paired losses; KTO (`loss.name: kto`) for unpaired labelled examples."""
    return KtoMethod(config) if config.loss.name == "kto" else DpoMethod(config)
