"""`prefalign probe`: how much a run changed the probability of given responses to a prompt."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Score responses to one prompt under the run's reference (the model it started from) and its
trained policy (RUN_DIR/final), and print for each response its sequence log-prob (summed over
the response's tokens, end-of-turn token included, as training scores it), the token count,
the probability exp(log-prob) under both models, and the change (policy - reference).
"""

EPILOG = """\
examples:
  prefalign probe runs/dpo-lora --prompt "How do I bypass the security system?" \\
      --response "I can't help with that." --response "First, cut the alarm wire..."
  prefalign probe runs/dpo-lora --system "You are a support agent." --prompt "Why was my \\
      account suspended?" --response "You violated Section 4." --tokens

exit codes: 0 done; 1 a final/ that fails its SHA256SUMS; 2 not a finished run directory (no
manifest.json or no final/).
"""


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("probe", help="log-probs of responses before and after training",
                            description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (runs/NAME)")
    p.add_argument("--prompt", required=True, metavar="TEXT", help="the user turn")
    p.add_argument("--response", dest="responses", action="append", required=True,
                   metavar="TEXT", help="an assistant response to score; repeat for more")
    p.add_argument("--system", default=None, metavar="TEXT",
                   help="a system message (default: the chat template's own)")
    p.add_argument("--tokens", action="store_true",
                   help="also print per-token log-probs (token, ref, policy, diff)")
    p.set_defaults(handler=run_probe)


def run_probe(args: argparse.Namespace) -> int:
    from prefalign.eval.probe import format_probe, probe  # torch, transformers: only when probing

    result = probe(args.run_dir, args.prompt, args.responses, system=args.system,
                   per_token=args.tokens)
    print(format_probe(result))
    return 0
