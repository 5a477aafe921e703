"""`prefalign distill-context`: safety context distillation into SFT rows (and DPO pairs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from prefalign.cli.judge_args import JUDGES_HELP, add_judge_arguments, panel_from_args

DESCRIPTION = """\
Safety context distillation (Llama 2): MODEL_OR_RUN answers every prompt of --prompts twice, as
it is and with a safety pre-prompt; the judges score both answers as replies to the prompt
without the pre-prompt; where the pre-prompted answer scores higher (by more than --min-margin)
it is kept. Kept answers are written to -o as SFT `messages` rows without the pre-prompt (for
`prefalign sft`), and with --pairs as DPO pairs (pre-prompted answer chosen, plain rejected).
The counts kept and dropped are printed; each output gets a lineage record beside it.
"""

PREPROMPT_HELP = """
default pre-prompt (--preprompt):
  "{preprompt}"
--preprompt-position prefix (default) puts it before the first user message, separated by a
blank line; system puts it into the system message (before an existing system prompt).
"""

EPILOG = JUDGES_HELP + PREPROMPT_HELP + """
examples:
  prefalign distill-context smollm2-135m-instruct --prompts red-team.jsonl --judge refusal \\
      -o distilled.jsonl --pairs distilled-pairs.jsonl
  prefalign distill-context runs/demo --prompts prompts.jsonl --judge rm:runs/rm-safety \\
      --preprompt "You are a safe and responsible assistant." -o distilled.jsonl

exit codes: 0 written; 1 an invalid prompt file (FILE:LINE: field: message); 2 a bad option, a
missing file or model, a judge that fails, or no answer kept.
"""


def register(commands: argparse._SubParsersAction) -> None:
    from prefalign.loop.context import DEFAULT_PREPROMPT

    p = commands.add_parser(
        "distill-context", help="safety context distillation: keep the pre-prompted answers "
        "the judges prefer", description=DESCRIPTION,
        epilog=EPILOG.format(preprompt=DEFAULT_PREPROMPT),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL_OR_RUN",
                   help="a model (alias, .gguf, HF directory) or a finished run directory")
    p.add_argument("--prompts", type=Path, required=True, metavar="FILE",
                   help="prompts (.jsonl: `prompt` string or messages, optional id, kind, ...)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.jsonl",
                   help="SFT rows of the kept answers")
    p.add_argument("--pairs", type=Path, default=None, metavar="PAIRS.jsonl",
                   help="also write DPO pairs: pre-prompted answer chosen, plain rejected")
    p.add_argument("--preprompt", default=DEFAULT_PREPROMPT, metavar="TEXT",
                   help="the safety pre-prompt (default below)")
    p.add_argument("--preprompt-position", choices=("prefix", "system"), default="prefix")
    add_judge_arguments(p)
    p.add_argument("--min-margin", type=float, default=0.0, metavar="X",
                   help="the pre-prompted answer must beat the plain one by more than X")
    p.add_argument("--round", type=int, default=1, metavar="N")
    _add_decoding_arguments(p)
    p.set_defaults(handler=run_distill)


def _add_decoding_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=128, metavar="N",
                   help="tokens per answer (default 128)")
    p.add_argument("--sample", action="store_true",
                   help="sample instead of greedy decoding (with --temperature, --top-p)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gen-batch-size", type=int, default=16, metavar="N",
                   help="prompts decoded together (default 16)")


def run_distill(args: argparse.Namespace) -> int:
    from prefalign.eval.generate import DecodeSettings
    from prefalign.loop.distill import DistillOptions, distill_context, format_report

    decoding = DecodeSettings(do_sample=args.sample, temperature=args.temperature,
                              top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                              seed=args.seed, batch_size=args.gen_batch_size)
    options = DistillOptions(preprompt=args.preprompt, position=args.preprompt_position,
                             min_margin=args.min_margin, round=args.round, decoding=decoding)
    if not args.prompts.is_file():
        raise FileNotFoundError(f"no such file: {args.prompts}")
    report = distill_context(args.model, args.prompts, panel_from_args(args), args.output,
                             pairs_output=args.pairs, options=options)
    print(format_report(report))
    return 0
