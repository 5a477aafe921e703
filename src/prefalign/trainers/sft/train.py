"""`prefalign sft`: supervised fine-tuning on the shared loop."""

from __future__ import annotations

from prefalign.config import Config
from prefalign.trainers.loop.loop import RunResult
from prefalign.trainers.loop.loop import train as train_with
from prefalign.trainers.sft.method import SftMethod


def train_sft(config: Config, *, resume: bool = False,
              tune_process: bool = False) -> RunResult:
    """Fine-tune `config`'s model on its conversations in `run.output_dir/run.name`; `resume`
    continues its checkpoint; `tune_process` as in `trainers.loop.loop.train`. `final/` loads with `AutoModelForCausalLM.from_pretrained` and can
    be a DPO config's `model.source` (the reference DPO needs)."""
    return train_with(config, SftMethod(config), resume=resume, tune_process=tune_process)
