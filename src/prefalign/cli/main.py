"""The `prefalign` command: a thin layer over the public API; every subcommand has --help.

Exit codes: 0 success; 1 invalid data, or a command that stopped on an error it reports (a
non-finite loss, a full disk, a damaged state file nothing verified can replace); 2 a usage
error: an invalid config or option, a missing file, a path that cannot be written or read
(permission denied, read-only file system); 130 interrupted. Errors are one line, no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from prefalign import __version__
from prefalign.cli import chat as chat_commands
from prefalign.cli import data as data_commands
from prefalign.cli import distill as distill_commands
from prefalign.cli import eval as eval_commands
from prefalign.cli import export as export_commands
from prefalign.cli import generate as generate_commands
from prefalign.cli import grpo as grpo_commands
from prefalign.cli import loop as loop_commands
from prefalign.cli import pairs as pairs_commands
from prefalign.cli import probe as probe_commands
from prefalign.cli import rm as rm_commands
from prefalign.cli import sft as sft_commands
from prefalign.cli import train as train_commands
from prefalign.cli import verify as verify_commands
from prefalign.data.types import DataError
from prefalign.engine.process import cap_kernel_caches
from prefalign.integrity import CorruptStateError
from prefalign.storage import StorageError, storage_error


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
    rm_commands.register(commands)
    grpo_commands.register(commands)
    eval_commands.register(commands)
    probe_commands.register(commands)
    export_commands.register(commands)
    verify_commands.register(commands)
    pairs_commands.register(commands)
    distill_commands.register(commands)
    loop_commands.register(commands)
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
    except CorruptStateError as error:
        return _report(str(error), 1)
    except StorageError as error:
        return _report(str(error), 1 if error.disk_full else 2)
    except (FileNotFoundError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        return _report(str(message), 2)
    except OSError as error:  # a file operation failed: say which, without a traceback
        return _report(*_system_error(error))
    except Exception as error:
        found = storage_error(error, None)  # a library's own error type for a full disk
        if found is None:
            raise
        return _report(str(found), 1)


def _system_error(error: OSError) -> tuple[str, int]:
    found = storage_error(error, None)
    if found is not None:
        return str(found), 1 if found.disk_full else 2
    where = f": {error.filename}" if error.filename else ""
    return f"{error.strerror or error}{where}", 1


def _report(message: str, code: int) -> int:
    print(f"prefalign: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
