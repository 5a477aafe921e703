"""`prefalign data ...`: validate, audit, preview and convert preference files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefalign.atomic import write_json_atomic
from prefalign.cli.data_sft import run_validate_sft
from prefalign.data.audit import audit, format_audit
from prefalign.data.bundled import BUNDLED, resolve_data_path
from prefalign.data.fingerprint import fingerprint_pairs
from prefalign.data.formats import FORMATS
from prefalign.data.load import LoadOptions, LoadResult, load_pairs, validate
from prefalign.data.tokenize import DEFAULT_MAX_LENGTH
from prefalign.data.writers import WRITE_FORMATS, to_record, write_jsonl_atomic
from prefalign.sources import DEFAULT_MODEL

PATHS_HELP = f"preference files (.jsonl, .json, .jsonl.gz) or bundled:NAME ({', '.join(BUNDLED)})"


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="validate, audit, preview and convert preference data")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    _register_validate(sub)
    _register_audit(sub)
    _register_preview(sub)
    _register_convert(sub)


def _add_load_options(parser: argparse.ArgumentParser, *, skip: bool = True) -> None:
    parser.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                        help="input format (default: auto-detected, then checked on every record)")
    parser.add_argument("--preference-axis", default="better", choices=["better", "safer"],
                        help="PKU-SafeRLHF rows: which preference to use (default: better)")
    if skip:
        parser.add_argument("--on-error", default="raise", choices=["raise", "skip"],
                            help="skip: leave out invalid records, write them with their reasons "
                                 "to --rejects, and say how many")
        parser.add_argument("--rejects", type=Path, default=Path("prefalign-rejects.jsonl"),
                            help="side file for skipped records (default: %(default)s)")


def _load_options(args: argparse.Namespace) -> LoadOptions:
    return LoadOptions(format=args.format, on_error=getattr(args, "on_error", "raise"),
                       preference_axis=args.preference_axis)


def _fingerprint_options(options: LoadOptions) -> dict[str, object]:
    return {"preference_axis": options.preference_axis, "dedupe": options.dedupe}


def _paths(values: list[str]) -> list[Path]:
    return [resolve_data_path(v) for v in values]


def _load(args: argparse.Namespace, paths: list[str]) -> LoadResult:
    options = _load_options(args)
    rejects = args.rejects if options.on_error == "skip" else None
    return load_pairs(_paths(paths), options, rejects_path=rejects)


def _print_warnings(result: LoadResult) -> None:
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)


# validate ------------------------------------------------------------------------------------

def _register_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check every record; list all defects; exit 1 if any")
    p.add_argument("paths", nargs="+", metavar="PATH", help=PATHS_HELP)
    p.add_argument("--sft", action="store_true",
                   help="check SFT data (messages, prompt/completion, or a preference format's "
                        "chosen side) instead of preference pairs")
    _add_load_options(p)
    p.set_defaults(handler=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    if args.sft:
        return run_validate_sft(args)
    options = _load_options(args)
    if options.on_error == "skip":
        result = _load(args, args.paths)
    else:
        result = validate(_paths(args.paths), options)
        for defect in result.defects:
            print(defect)
    _print_warnings(result)
    fingerprint = fingerprint_pairs(result.pairs, _fingerprint_options(options))
    formats = ", ".join(f"{src} [{fmt}]" for src, fmt in result.format_by_source.items())
    print(f"{result.records_read} record(s) read from {formats}; {len(result.pairs)} pair(s) valid; "
          f"{len(result.defects)} defect(s) in {result.records_rejected} record(s)")
    print(f"fingerprint: {fingerprint}")
    return 1 if result.defects and options.on_error == "raise" else 0


# audit ---------------------------------------------------------------------------------------

def _register_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="counts, duplicates, length bias, truncation and leakage")
    p.add_argument("paths", nargs="+", metavar="PATH", help=PATHS_HELP)
    p.add_argument("--eval", nargs="+", default=None, metavar="PATH",
                   help="evaluation files to check for prompt leakage")
    p.add_argument("--tokenizer", default=None, metavar="MODEL",
                   help=f"count lengths in tokens of this model's tokenizer (e.g. {DEFAULT_MODEL}); "
                        "default: characters")
    p.add_argument("--max-length", type=int, default=None, metavar="N",
                   help="report truncation impact at this many tokens (needs --tokenizer)")
    p.add_argument("--max-prompt-length", type=int, default=None, metavar="N",
                   help="prompt budget for the truncation check (default: max-length // 2)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the numbers as JSON")
    p.add_argument("--strict", action="store_true", help="exit 1 when any flag is raised")
    _add_load_options(p)
    p.set_defaults(handler=run_audit)


def run_audit(args: argparse.Namespace) -> int:
    if args.max_length is not None and args.tokenizer is None:
        raise ValueError("--max-length needs --tokenizer (truncation is counted in tokens)")
    result = _load(args, args.paths)
    _print_warnings(result)
    eval_pairs = _load(args, args.eval).pairs if args.eval else None
    lengths = None
    if args.tokenizer is not None:
        from prefalign.data.tokenize import token_lengths
        from prefalign.data.tokenizer import load_tokenizer

        lengths = token_lengths(result.pairs, load_tokenizer(args.tokenizer))
    fingerprint = fingerprint_pairs(result.pairs, _fingerprint_options(_load_options(args)))
    report = audit(result, fingerprint, lengths=lengths, max_length=args.max_length,
                   max_prompt_length=args.max_prompt_length, eval_pairs=eval_pairs)
    print(format_audit(report))
    if args.json is not None:
        write_json_atomic(report.to_dict(), args.json)
        print(f"wrote {args.json}")
    return 1 if args.strict and report.flags else 0


# preview -------------------------------------------------------------------------------------

def _register_preview(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preview", help="show a pair rendered with the chat template, boundary marked")
    p.add_argument("path", metavar="PATH", help=PATHS_HELP)
    p.add_argument("--index", type=int, default=0, metavar="N", help="which pair (0-based; default 0)")
    p.add_argument("--tokenizer", default=DEFAULT_MODEL, metavar="MODEL",
                   help="tokenizer and chat template (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH, metavar="N",
                   help="default: %(default)s")
    _add_load_options(p, skip=False)
    p.set_defaults(handler=run_preview)


def run_preview(args: argparse.Namespace) -> int:
    from prefalign.data.preview import render_preview
    from prefalign.data.tokenize import TruncationOptions
    from prefalign.data.tokenizer import load_tokenizer

    result = load_pairs(_paths([args.path]), _load_options(args))
    _print_warnings(result)
    if not 0 <= args.index < len(result.pairs):
        raise ValueError(f"--index {args.index} is out of range: {args.path} has {len(result.pairs)} pair(s)")
    tokenizer = load_tokenizer(args.tokenizer)
    print(render_preview(result.pairs[args.index], tokenizer, TruncationOptions(max_length=args.max_length)))
    return 0


# convert -------------------------------------------------------------------------------------

def _register_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="rewrite pairs in another format (nothing written if invalid)")
    p.add_argument("paths", nargs="+", metavar="PATH", help=PATHS_HELP)
    p.add_argument("--to", required=True, choices=WRITE_FORMATS, help="output format")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUT", help="output .jsonl")
    _add_load_options(p)
    p.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    result = _load(args, args.paths)  # raises DataError before anything is written
    _print_warnings(result)
    write_jsonl_atomic((to_record(pair, args.to) for pair in result.pairs), args.output)
    print(f"wrote {len(result.pairs)} pair(s) as {args.to} to {args.output}")
    return 0
