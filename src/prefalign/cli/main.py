"""The `prefalign` command: a thin layer over the public API; every subcommand has --help."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from prefalign import __version__
from prefalign.cli import chat as chat_commands
from prefalign.cli import data as data_commands
from prefalign.cli import eval as eval_commands
from prefalign.cli import generate as generate_commands
from prefalign.cli import probe as probe_commands
from prefalign.cli import sft as sft_commands
from prefalign.cli import train as train_commands
from prefalign.data.types import DataError
from prefalign.engine.process import cap_kernel_caches


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefalign",
        description="Align language models with human preferences (DPO and its relatives).",
    )
    parser.add_argument("--version", action="version", version=f"prefalign {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_commands.register(commands)
    train_commands.register(commands)
    sft_commands.register(commands)
    eval_commands.register(commands)
    probe_commands.register(commands)
    generate_commands.register(commands)
    chat_commands.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The CLI owns its process: cap oneDNN's kernel caches before any product runs (a library
    # caller asks for it with tune_process=True).
    cap_kernel_caches()
    try:
        return int(args.handler(args))
    except DataError as error:
        print(f"prefalign: {error}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"prefalign: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
