"""`prefalign grpo`: online RL (GRPO, Dr. GRPO, DAPO, RLOO) on judged samples from a YAML config."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from prefalign.cli.train import add_run_arguments, run_trainer
from prefalign.config import Config

if TYPE_CHECKING:
    from prefalign.trainers.loop.loop import RunResult

DESCRIPTION = """\
Train a policy online: each step samples grpo.group_size completions per prompt of grpo.prompts
from the current policy, scores them with grpo.judges (rm:RUN_DIR, implicit:RUN_DIR, refusal,
module:function, each @WEIGHT, summed), turns the rewards into advantages within each group
(or RLOO's leave-one-out baseline) and takes grpo.mu optimiser steps on the clipped surrogate,
with an optional k3 KL to the starting model (grpo.beta). Sections: run, model, lora, grpo,
reference (frozen_copy | adapter_off, with beta > 0), optim, train; see docs/grpo.md.
"""

EPILOG = """\
examples:
  prefalign grpo -c configs/grpo-safety.yaml
  prefalign grpo -c configs/grpo-safety.yaml grpo.group_size=8 grpo.normalisation=dr_grpo
  prefalign grpo -c configs/grpo-safety.yaml --resume

A run writes runs/NAME/ like `prefalign train`; final/ loads with
AutoModelForCausalLM.from_pretrained and `prefalign eval` compares it with the original model.
exit codes: 0 finished; 1 an invalid prompt file or a run stopped on an error it reports; 2 an
invalid config, an unknown key, a judge that does not resolve or a missing file; 130 interrupted.
"""


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("grpo", help="online RL on judged samples (GRPO, Dr. GRPO, DAPO, "
                            "RLOO)", description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.set_defaults(handler=run_grpo)


def run_grpo(args: argparse.Namespace) -> int:
    def train(config: Config, resume: bool) -> RunResult:
        from prefalign.trainers.grpo.train import train_grpo  # torch: only when training

        return train_grpo(config, resume=resume, tune_process=True)

    return run_trainer(args, train, "grpo")
