"""`prefalign loop`: K rounds of generate -> judge -> build pairs -> DPO -> evaluate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Iterative on-policy DPO. Round R samples N responses per prompt from round R-1's policy (round
1: the loop's model), judges them and builds preference pairs as `prefalign pairs build` does,
trains DPO on them from that policy (reference: that policy, or the loop's model with
`reference: original`), and evaluates the new policy against the loop's model as `prefalign
eval` does. Everything lands in output_dir/name/: round-R/{samples.jsonl, pairs.jsonl (+
lineage), run/, eval/}, and rounds.json / rounds.md, the headline numbers per round.

The config's keys and defaults: docs/loop.md. Overrides after the options are parsed as YAML:
  rounds=1  sampling.n=8  pairs.min_margin=0.5  train.settings.optim.lr=1e-5  eval.harmful=50

--resume continues the loop at the round, and within it the stage, where it stopped; a DPO run
stopped mid-way continues from its last checkpoint. Nothing finished is redone. A loop
directory made from another config is refused (more rounds are allowed).
"""

EPILOG = """\
examples:
  prefalign loop -c configs/loop-safety.yaml
  prefalign loop -c configs/loop-safety.yaml --resume
  prefalign loop -c configs/loop-safety.yaml rounds=3 --resume     # one more round
  prefalign loop -c configs/loop-safety.yaml --print-config

exit codes: 0 finished; 1 invalid data (FILE:LINE: FIELD: message) or a round's DPO run that
failed; 2 an invalid config, a loop directory that cannot be resumed as asked, a missing file,
a judge that fails, or a round without any pair; 130 interrupted (continue with --resume).
"""


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("loop", help="iterative on-policy DPO: generate, judge, train, eval",
                            description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", type=Path, required=True, metavar="LOOP.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="change one config value; applied in order after the file")
    p.add_argument("--resume", action="store_true",
                   help="continue the loop directory where it stopped")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved loop config as YAML and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars while sampling")
    p.set_defaults(handler=run_loop_command)


def run_loop_command(args: argparse.Namespace) -> int:
    from prefalign.cli.train import config_yaml_dict
    from prefalign.config import ConfigError
    from prefalign.loop.rounds import RoundFailed, run_loop
    from prefalign.loop.rounds_config import load_loop_config

    try:
        config = load_loop_config(args.config, args.overrides)  # before any model loads
    except ConfigError as error:
        print(f"prefalign: error: {error}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config_yaml_dict(config.to_dict()), end="")
        return 0
    try:
        result = run_loop(config, resume=args.resume, progress=not args.quiet,
                          tune_process=True)
    except RoundFailed as error:
        print(f"prefalign: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nprefalign: interrupted; continue with `prefalign loop -c {args.config} ... "
              f"--resume` (in {config.loop_dir})", file=sys.stderr)
        return 130
    print((result.loop_dir / "rounds.md").read_text(encoding="utf-8"), end="")
    print(f"loop: {result.loop_dir} (rounds.json, rounds.md; round-*/eval/report.html)")
    return 0
