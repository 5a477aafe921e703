"""`prefalign pairs build`: preference pairs (or SFT rows) from judged samples."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefalign.cli.judge_args import JUDGES_HELP, add_judge_arguments, panel_from_args

DESCRIPTION = """\
Score every sample of SAMPLES.jsonl (`prefalign generate`'s output: prompt_id, sample, text per
row) with the judges, and write per prompt one preference pair in TRL's conversational form
(prompt messages, chosen, rejected) or, with --strategy best, one SFT `messages` row (rejection
sampling fine-tuning for `prefalign sft`). A prompt whose samples tie within --min-margin gives
no pair; it is counted. Each row carries its provenance (generator weight hash and settings,
judge ids and hashes, prompt-set fingerprint, round) in `metadata`; OUT.jsonl.lineage.json
beside it records the output's fingerprint, its parents, the judges, settings and counts.
Prompts and their columns (kind, category, ...) come from the samples' rows, else from
--prompts FILE by prompt id.
"""

EPILOG = JUDGES_HELP + """
strategies: best-worst (highest vs lowest score), best-random (highest vs a seeded random
sample it beats by more than the margin), best (the highest alone, as an SFT row).

examples:
  prefalign pairs build samples.jsonl --judge rm:runs/rm-helpful -o pairs.jsonl
  prefalign pairs build samples.jsonl --prompts prompts.jsonl --judge refusal@1 \\
      --judge rm:runs/rm-helpful@0.5 --min-margin 0.1 -o pairs.jsonl
  prefalign pairs build samples.jsonl --combine piecewise --safety-judge rm:runs/rm-safety \\
      --threshold 0.15 --judge rm:runs/rm-helpful -o pairs.jsonl
  prefalign pairs build samples.jsonl --judge my_rewards.py:length --strategy best -o sft.jsonl
  prefalign data audit pairs.jsonl && prefalign train -c cfg.yaml data.train=[pairs.jsonl]

exit codes: 0 written; 1 invalid samples or prompts (FILE:LINE: field: message); 2 a bad
option, a missing file, a judge that fails or returns unusable scores, or nothing to write.
"""


def register(commands: argparse._SubParsersAction) -> None:
    pairs = commands.add_parser("pairs", help="build preference pairs from judged samples")
    sub = pairs.add_subparsers(dest="pairs_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("build", help="judge samples and write pairs (or SFT rows) with lineage",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("samples", type=Path, metavar="SAMPLES.jsonl", help="the samples to judge")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.jsonl")
    p.add_argument("--prompts", type=Path, default=None, metavar="FILE",
                   help="prompt file for samples whose rows carry no prompt or columns")
    add_judge_arguments(p)
    p.add_argument("--strategy", choices=("best-worst", "best-random", "best"),
                   default="best-worst", help="which samples make a row (default: best-worst)")
    p.add_argument("--min-margin", type=float, default=0.0, metavar="X",
                   help="a pair's chosen score must beat its rejected one by more than X "
                        "(default 0: any strict difference)")
    p.add_argument("--seed", type=int, default=0, help="seed of best-random's picks")
    p.add_argument("--round", type=int, default=1, metavar="N",
                   help="the iteration of generate -> judge -> train (default 1)")
    p.set_defaults(handler=run_pairs_build)


def run_pairs_build(args: argparse.Namespace) -> int:
    from prefalign.loop.pairs import BuildOptions, build_pairs, format_report

    options = BuildOptions(strategy=args.strategy, min_margin=args.min_margin, seed=args.seed,
                           round=args.round)  # bad values fail before any judge loads
    for path in (args.samples, args.prompts):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
    report = build_pairs(args.samples, panel_from_args(args), args.output,
                         prompts_path=args.prompts, options=options)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(format_report(report, args.strategy))
    return 0
