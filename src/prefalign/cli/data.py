"""`prefalign data ...`: validate, audit, preview and convert preference files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefalign.atomic import write_json_atomic
from prefalign.cli.data_sft import run_validate_sft
from prefalign.data.audit import AuditCollector, format_audit
from prefalign.data.bundled import BUNDLED, resolve_data_path
from prefalign.data.fingerprint import PairFingerprint
from prefalign.data.formats import FORMATS
from prefalign.data.load import LoadOptions, PairStream, ScanSummary, stream_pairs
from prefalign.data.tokenize import DEFAULT_MAX_LENGTH
from prefalign.data.writers import WRITE_FORMATS, to_record, write_jsonl_atomic
from prefalign.sources import DEFAULT_MODEL

PATHS_HELP = ("preference data: .jsonl or .json files (either may be .gz), .parquet, .csv (or "
              ".csv.gz), a folder written by datasets' save_to_disk (for a DatasetDict, one "
              f"split's folder), or bundled:NAME ({', '.join(BUNDLED)}); see 'inputs' below")
INPUTS_EPILOG = """inputs:
  Every input is read in full and every record checked; defects print as PATH:LINE: FIELD:
  message. LINE is the 1-based line of a JSONL file, the 0-based element index of a JSON
  array, the 1-based row of a Parquet file or saved dataset, and the line a CSV row starts on
  (the header row is line 1). CSV cells are text, except that a cell holding a JSON array or
  object is decoded: put message lists (conversational TRL) and the Accepted/Rejected lists
  in cells as JSON (json.dumps); a cell like [{'role': ...}] (Python's str() of a list) is a
  defect."""


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="validate, audit, preview and convert preference data",
                               description=f"Validate, audit, preview and convert {PATHS_HELP}.",
                               epilog=INPUTS_EPILOG,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
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


def _stream(args: argparse.Namespace, paths: list[str], *, rejects_tag: str = "") -> PairStream:
    """The pairs of `paths`, one at a time; under --on-error skip the rejects go to --rejects
    (with `.TAG` before its extension when tagged, so the eval's rejects keep their own file)."""
    options = _load_options(args)
    rejects_path = None
    if options.on_error == "skip":
        rejects_path = args.rejects
        if rejects_tag:
            rejects_path = args.rejects.with_name(f"{args.rejects.stem}.{rejects_tag}{args.rejects.suffix}")
    return stream_pairs(_paths(paths), options, rejects_path=rejects_path)


def _print_warnings(summary: ScanSummary, prefix: str = "") -> None:
    for warning in summary.warnings:
        print(f"warning: {prefix}{warning}", file=sys.stderr)


# validate ------------------------------------------------------------------------------------

def _register_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check every record; list all defects; exit 1 if any",
                       epilog=INPUTS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        stream = _stream(args, args.paths)
    else:
        stream = stream_pairs(_paths(args.paths), options, validate_only=True)
    fingerprint = PairFingerprint(_fingerprint_options(options))
    for pair in stream:
        fingerprint.add(pair)
    summary = stream.summary
    if options.on_error == "raise":
        for defect in summary.defects:
            print(defect)
    _print_warnings(summary)
    formats = ", ".join(f"{src} [{fmt}]" for src, fmt in summary.format_by_source.items())
    print(f"{summary.records_read} record(s) read from {formats}; {summary.pairs_kept} pair(s) "
          f"valid; {len(summary.defects)} defect(s) in {summary.records_rejected} record(s)")
    print(f"fingerprint: {fingerprint.hexdigest()}")
    return 1 if summary.defects and options.on_error == "raise" else 0


# audit ---------------------------------------------------------------------------------------

def _register_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="counts, duplicates, length bias, truncation and leakage",
                       epilog=INPUTS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help=PATHS_HELP)
    p.add_argument("--eval", nargs="+", default=None, metavar="PATH",
                   help="evaluation data to check for prompt leakage (same inputs as PATH; "
                        "under --on-error skip its rejects go to REJECTS with .eval before the "
                        "extension)")
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
    tokenizer = None
    if args.tokenizer is not None:
        from prefalign.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    collector = AuditCollector(tokenizer)
    fingerprint = PairFingerprint(_fingerprint_options(_load_options(args)))
    stream = _stream(args, args.paths)
    for pair in stream:
        collector.add(pair)
        fingerprint.add(pair)
    _print_warnings(stream.summary)
    # The eval pairs are read after the training pairs, so the training file's defects come first.
    eval_stream = _stream(args, args.eval, rejects_tag="eval") if args.eval else None
    report = collector.report(stream.summary, fingerprint.hexdigest(), max_length=args.max_length,
                              max_prompt_length=args.max_prompt_length, eval_pairs=eval_stream)
    if eval_stream is not None:
        _print_warnings(eval_stream.summary, prefix="eval: ")
    print(format_audit(report))
    if args.json is not None:
        write_json_atomic(report.to_dict(), args.json)
        print(f"wrote {args.json}")
    return 1 if args.strict and report.flags else 0


# preview -------------------------------------------------------------------------------------

def _register_preview(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preview", help="show a pair rendered with the chat template, boundary marked",
                       epilog=INPUTS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
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

    stream = stream_pairs(_paths([args.path]), _load_options(args))
    shown = None
    for index, pair in enumerate(stream):  # read to the end: a defect anywhere is an error
        if index == args.index:
            shown = pair
    _print_warnings(stream.summary)
    if shown is None:
        count = stream.summary.pairs_kept
        raise ValueError(f"--index {args.index} is out of range: {args.path} has {count} pair(s)")
    tokenizer = load_tokenizer(args.tokenizer)
    print(render_preview(shown, tokenizer, TruncationOptions(max_length=args.max_length)))
    return 0


# convert -------------------------------------------------------------------------------------

def _register_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="rewrite pairs in another format (nothing written if invalid)",
                       epilog=INPUTS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help=PATHS_HELP)
    p.add_argument("--to", required=True, choices=WRITE_FORMATS, help="output format")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUT", help="output .jsonl")
    _add_load_options(p)
    p.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    stream = _stream(args, args.paths)
    # Written to a temp file as the pairs come; a DataError at the end of the stream (or a pair
    # the format cannot express) removes it, so nothing is written for invalid input.
    written = write_jsonl_atomic((to_record(pair, args.to) for pair in stream), args.output)
    _print_warnings(stream.summary)
    print(f"wrote {written} pair(s) as {args.to} to {args.output}")
    return 0
