"""`prefalign verify`: which of a run's files are intact, checked against their sha256 digests."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Check every file a run keeps against what was recorded when it was written: each checkpoint's
files against the sizes and sha256 digests in its COMPLETE marker, final/ against its
SHA256SUMS (also `cd RUN_DIR/final && sha256sum -c SHA256SUMS`), the precomputed reference
caches and the step-0 held-out log-probs against the digests in their metadata, and that
manifest.json is readable. Prints one line per item (OK or FAILED, and why) and the checkpoint
`prefalign train --resume` would continue from: the newest one that passes.
"""

EPILOG = """\
example:
  prefalign verify runs/dpo-lora

exit codes: 0 everything intact; 1 something failed verification; 2 not a run directory.
"""


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("verify", help="check a run's files against their sha256 digests",
                            description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (runs/NAME)")
    p.set_defaults(handler=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from prefalign.trainers.loop.verify import verify_run

    verdict = verify_run(args.run_dir)
    checks = verdict.checks
    width = max(len(_shown(check.path, args.run_dir)) for check in checks)
    print(f"{args.run_dir}:")
    for check in checks:
        status = "OK    " if check.ok else "FAILED"
        print(f"  {status}  {_shown(check.path, args.run_dir):<{width}}  {check.detail}")
    resume = verdict.resume_from
    start = _shown(resume, args.run_dir) if resume else "step 0 (no verified checkpoint)"
    print(f"--resume continues from: {start}")
    failed = len(verdict.failed)
    print(f"{len(checks) - failed} of {len(checks)} intact" + (f", {failed} FAILED" if failed
                                                                  else ""))
    return 1 if failed else 0


def _shown(path: Path, run_dir: Path) -> str:
    """`path` relative to the run directory when it lies inside it."""
    try:
        return str(Path(path).relative_to(run_dir))
    except ValueError:
        return str(path)
