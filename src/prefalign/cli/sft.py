"""`prefalign sft`: supervised fine-tuning on conversations from a YAML config."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from prefalign.cli.train import add_run_arguments, run_trainer
from prefalign.config import Config

if TYPE_CHECKING:
    from prefalign.trainers.loop.loop import RunResult

DESCRIPTION = """\
Fine-tune a model on conversations (the loss on assistant tokens only), as described by a YAML
config with the same sections as `prefalign train` (run, model, lora, data, optim, train) plus
sft (loss_on: all | last assistant turns); loss and reference are refused.

Data: TRL-style `messages` lists (system/user/assistant, multi-turn), `prompt`/`completion` rows,
or the chosen side of any preference format prefalign reads (Accepted/Rejected: the accepted
turns). Every row is validated; errors are printed as FILE:LINE: field: message.
"""

EPILOG = """\
examples:
  prefalign sft -c configs/sft.yaml
  prefalign sft -c configs/sft.yaml sft.loss_on=last train.max_steps=20
  prefalign sft -c configs/sft.yaml --resume
  prefalign train -c configs/dpo-lora.yaml model.source=runs/sft/final   # DPO from the SFT model

A run writes runs/NAME/ like `prefalign train`; final/ loads with
AutoModelForCausalLM.from_pretrained. exit codes: 0 finished; 1 invalid data or a run stopped on
an error it reports; 2 an invalid config, an unknown key or a missing file; 130 interrupted.
"""


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("sft", help="supervised fine-tuning on conversations (makes the "
                            "reference DPO starts from)", description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.set_defaults(handler=run_sft)


def run_sft(args: argparse.Namespace) -> int:
    def train(config: Config, resume: bool) -> RunResult:
        from prefalign.trainers.sft.train import train_sft  # torch: only when training

        return train_sft(config, resume=resume, tune_process=True)

    return run_trainer(args, train, "sft")
