"""`prefalign data validate --sft`: check SFT conversation files with the pairs' output and exit codes."""

from __future__ import annotations

import argparse
import sys

from prefalign.data.conversation import fingerprint_conversations
from prefalign.data.sft_formats import PREFERENCE_PREFIX
from prefalign.data.sft_load import SftLoadOptions, load_conversations, validate_conversations


def sft_options(args: argparse.Namespace) -> SftLoadOptions:
    """--format auto detects; a preference format name reads that format's chosen side."""
    named = None if args.format == "auto" else PREFERENCE_PREFIX + args.format
    on_error = getattr(args, "on_error", "raise")
    rejects = getattr(args, "rejects", None) if on_error == "skip" else None
    return SftLoadOptions(format=named, on_error=on_error, rejects_path=rejects,
                          preference_axis=args.preference_axis)


def run_validate_sft(args: argparse.Namespace) -> int:
    """Print every defect (or, with --on-error skip, write them to --rejects); 1 if any."""
    options = sft_options(args)
    if options.on_error == "skip":
        result = load_conversations(args.paths, options)
    else:
        result = validate_conversations(args.paths, options)
        for defect in result.defects:
            print(defect)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    counts = result.counts
    formats = ", ".join(f"{src} [{fmt}]" for src, fmt in result.formats.items())
    print(f"{counts['records']} record(s) read from {formats}; {counts['kept']} conversation(s) "
          f"valid ({counts['assistant_turns']} assistant turn(s)); {counts['defects']} defect(s) "
          f"in {counts['skipped']} record(s)")
    print(f"fingerprint: {fingerprint_conversations(result.conversations)}")
    return 1 if result.defects and options.on_error == "raise" else 0
