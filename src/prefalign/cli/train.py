"""`prefalign train`: read a config, apply overrides, and run (or just print) the training job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from prefalign.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from prefalign.trainers.loop.loop import RunResult

DESCRIPTION = """\
Train a policy on preference pairs (DPO and its relatives) as described by a YAML config.

The config has the sections run, model, lora, data, loss, reference, optim and train (sft is
`prefalign sft`'s); every key and its default is documented in prefalign/config.py, and examples
live in configs/. Without -c
the built-in defaults are used: DPO (beta 0.1) with full fine-tuning of smollm2-135m-instruct
against a frozen copy, on the bundled hh-rlhf harmless split.

Overrides come after the options and are parsed as YAML, so numbers, lists and null work:
  optim.lr=1e-5  lora.target_modules=[q_proj,v_proj]  model.adapter=null  loss.params.beta=0.5
"""

EPILOG = """\
examples:
  prefalign train -c configs/dpo-lora.yaml
  prefalign train -c configs/dpo-lora.yaml run.name=lr-sweep-1 optim.lr=1e-4 train.max_steps=50
  prefalign train -c configs/dpo-lora.yaml --print-config > resolved.yaml
  prefalign train -c configs/dpo-lora.yaml --resume
  accelerate launch --num_processes 2 -m prefalign.cli.main train -c configs/dpo-lora.yaml

A run writes runs/NAME/ (run.output_dir/run.name): manifest.json, metrics.jsonl, checkpoints/
and final/. --resume continues that run from its newest checkpoint whose files match the sha256
digests recorded when it was saved; a newer one that does not is named in a warning and skipped
(`prefalign verify RUN_DIR` lists what is intact).
exit codes: 0 finished; 1 invalid data (FILE:LINE: FIELD: message), or the run stopped on an
error it reports (a NaN loss, a full disk, a damaged state file); 2 an invalid config, an
unknown key, a missing file, or a path that cannot be written (permission denied, read-only);
130 interrupted.
"""


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="train a policy from a YAML config (DPO, IPO, SimPO, ...)",
                            description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.set_defaults(handler=run_train)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """-c CONFIG, overrides, --resume, --print-config: the same for every trainer."""
    p.add_argument("-c", "--config", type=Path, default=None, metavar="CONFIG.yaml",
                   help="the run's config (default: the built-in defaults)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="change one config value; applied in order after the file")
    p.add_argument("--resume", action="store_true",
                   help="continue run.output_dir/run.name from its last checkpoint")
    p.add_argument("--print-config", "--dry-run", dest="print_config", action="store_true",
                   help="print the fully resolved config as YAML and exit without training")


def run_train(args: argparse.Namespace) -> int:
    def train(config: Config, resume: bool) -> RunResult:
        from prefalign.trainers.dpo.train import train  # torch, transformers: only when training

        return train(config, resume=resume, tune_process=True)

    return run_trainer(args, train, "train")


def run_trainer(args: argparse.Namespace, train: Callable[[Config, bool], RunResult],
                command: str) -> int:
    """Load the config, then print it or train with `train`; errors become exit codes."""
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(f"prefalign: error: {error}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config_yaml(config), end="")
        return 0
    from prefalign.trainers.loop.run import end_processes

    try:
        result = train(config, args.resume)
    except ConfigError as error:  # checks that need the run directory, e.g. a resume mismatch
        print(f"prefalign: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nprefalign: interrupted; continue with `prefalign {command} ... --resume` "
              f"(from the last checkpoint in {Path(config.run.output_dir) / config.run.name})",
              file=sys.stderr)
        return 130
    finally:
        end_processes()
    return _exit_code(result)


class _ConfigDumper(yaml.SafeDumper):
    """Sections as blocks, lists inline (`target_modules: [q_proj, v_proj]`), as in configs/."""


_ConfigDumper.add_representer(
    list, lambda dumper, items: dumper.represent_sequence("tag:yaml.org,2002:seq", items,
                                                          flow_style=True))


def config_yaml(config: Config) -> str:
    """The resolved config as YAML, in field order; `load_config` reads it back unchanged."""
    return config_yaml_dict(config.to_dict())


def config_yaml_dict(raw: dict) -> str:
    """A config's plain dict as YAML: sections as blocks, lists inline, in field order."""
    return yaml.dump(raw, Dumper=_ConfigDumper, sort_keys=False, default_flow_style=False)


def _exit_code(result: RunResult) -> int:
    # A run that stopped on a NaN loss ("failed: ...") is not a success for scripts.
    return 0 if result.outcome in ("completed", "early_stopped") else 1
