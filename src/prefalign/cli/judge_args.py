"""The judge flags `pairs build` and `distill-context` share: --judge, --combine, --safety-judge,
--threshold."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefalign.judges.combine import Panel

JUDGES_HELP = """\
judges (--judge SPEC[@WEIGHT], repeatable):
  rm:RUN_DIR        a reward model: RUN_DIR/final is an AutoModelForSequenceClassification
                    (prefalign rm train); scores each rendered conversation
  implicit:RUN_DIR  a DPO run's implicit reward beta*[log pi(y|x) - log pi_ref(y|x)]
  refusal           the refusal rules, kind-aware: 1 when a harmful prompt is refused or a
                    benign one answered, else 0 (needs each prompt's `kind` column)
  module:function   a Python function (importable module or path/to/file.py) called as TRL
                    calls reward functions: f(prompts=, completions=, **columns) -> floats
combining: --combine sum (default) adds the judges' scores times their weights (@WEIGHT,
default 1). --combine piecewise --safety-judge SPEC --threshold T applies Llama 2's rule: the
safety judge's score where the prompt's `kind` is harmful or that score is below T, else the
(weighted sum of the) --judge scores; completions whose safety score is below T are dropped.
"""


def add_judge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--judge", action="append", required=True, metavar="SPEC[@WEIGHT]",
                        help="a judge (repeatable); see 'judges' below")
    parser.add_argument("--combine", choices=("sum", "piecewise"), default="sum",
                        help="how several judges' scores combine (default: sum)")
    parser.add_argument("--safety-judge", default=None, metavar="SPEC",
                        help="the safety judge of --combine piecewise")
    parser.add_argument("--threshold", type=float, default=None, metavar="T",
                        help="the piecewise rule's safety threshold")


def panel_from_args(args: argparse.Namespace) -> Panel:
    """Every spec parsed and the combination checked before the first judge loads."""
    from prefalign.judges.spec import load_panel  # models load here, not at --help

    return load_panel(args.judge, combine=args.combine, safety=args.safety_judge,
                      threshold=args.threshold)
