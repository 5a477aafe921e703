"""`prefalign rm train | eval | score`: reward models (Bradley–Terry) and what they say."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from prefalign.cli.train import add_run_arguments, run_trainer
from prefalign.config import Config

if TYPE_CHECKING:
    from prefalign.trainers.loop.loop import RunResult

TRAIN_DESCRIPTION = """\
Train a scalar reward model on preference pairs: the model's decoder with a one-output `score`
head (initialised from the run seed), trained on the Bradley–Terry loss
−log σ(r⁺ − r⁻ − m) + η·(r⁺ + r⁻)², each pair's prompt computed once for both replies.

The config has the sections of `prefalign train` without loss and reference (refused), plus
rm: margin (read Llama 2's margin m from each pair's numeric `margin` field; a non-numeric one
is an error naming FILE:LINE) and centering (η, reward centring of Eisenstein et al. 2023).
With LoRA set lora.merge_on_save: true. final/ loads with
AutoModelForSequenceClassification.from_pretrained (num_labels 1).
"""

TRAIN_EPILOG = """\
examples:
  prefalign rm train -c configs/rm-safety.yaml
  prefalign rm train -c configs/rm-helpful.yaml rm.centering=0.01 train.max_steps=20
  prefalign rm train -c configs/rm-safety.yaml --resume

exit codes: 0 finished; 1 invalid data or a run stopped on an error it reports; 2 an invalid
config, an unknown key or a missing file; 130 interrupted.
"""

EVAL_DESCRIPTION = """\
Score preference pairs with a trained reward model and write into --out: eval.json (every
number), pairs.csv (per-pair rewards), report.html (self-contained, plots embedded) and
summary.md. Measured: accuracy beside the length-only baseline and the length-balanced accuracy
(95% CI), by source and category; the correlation of the reward margin with the length
difference; the distributions of the rewards; calibration of σ(r⁺ − r⁻) (expected calibration
error over 10 bins, reliability diagram) before and after a temperature fitted on a calibration
split; with --dpo, a DPO run's implicit reward on the same pairs beside the reward model's.
"""

EVAL_EPILOG = """\
examples:
  prefalign rm eval runs/rm-safety --pairs bundled:hh-harmless-heldout --out runs/rm-safety/eval
  prefalign rm eval runs/rm-safety --pairs heldout.jsonl --dpo runs/demo --out ev
  prefalign rm eval runs/rm-safety --pairs a.jsonl --calibration cal.jsonl --out ev

exit codes: 0 done; 1 invalid data (FILE:LINE: FIELD: message); 2 not a reward-model run or a
bad option.
"""

SCORE_DESCRIPTION = """\
Score responses with a trained reward model: read rows with `prompt` and `response` (strings,
or `prompt` as a list of chat messages), or `messages` (a conversation ending with an
assistant turn), and write each row unchanged with a `score` field added, in input order, to
OUT.jsonl (written atomically). Rows are rendered with the run's chat template and truncated
as training truncated them.
"""


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("rm", help="reward models: train, evaluate, score")
    actions = p.add_subparsers(dest="rm_command", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="train a reward model from a YAML config",
                               description=TRAIN_DESCRIPTION, epilog=TRAIN_EPILOG,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(train)
    train.set_defaults(handler=run_rm_train)
    _register_eval(actions)
    _register_score(actions)


def _register_eval(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser("eval", help="accuracy, length baselines, calibration, report",
                           description=EVAL_DESCRIPTION, epilog=EVAL_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished rm run")
    p.add_argument("--pairs", nargs="+", metavar="FILE", required=True,
                   help="preference pairs to score (paths or bundled:NAME)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    p.add_argument("--calibration", nargs="+", metavar="FILE", default=(),
                   help="pairs to fit the temperature on (default: a seeded half of --pairs, "
                        "the ECE then measured on the other half)")
    p.add_argument("--dpo", type=Path, metavar="RUN_DIR", default=None,
                   help="a finished DPO run: its implicit reward on the same pairs, side by side")
    p.add_argument("--max-pairs", type=int, default=None, metavar="N",
                   help="seeded sample of N pairs (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4, metavar="N",
                   help="pairs per scoring forward (default 4)")
    p.add_argument("--cpu-matmul", choices=("auto", "onednn", "torch"), default="auto",
                   help="float32 CPU products, as train.cpu_matmul (default: auto)")
    p.set_defaults(handler=run_rm_eval)


def _register_score(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser("score", help="add a reward `score` to each prompt/response row",
                           description=SCORE_DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished rm run")
    p.add_argument("--input", type=Path, required=True, metavar="FILE",
                   help="JSONL (or .json array, either gzipped) of prompt/response or messages")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.jsonl")
    p.add_argument("--batch-size", type=int, default=8, metavar="N")
    p.add_argument("--cpu-matmul", choices=("auto", "onednn", "torch"), default="auto")
    p.set_defaults(handler=run_rm_score)


def run_rm_train(args: argparse.Namespace) -> int:
    def train(config: Config, resume: bool) -> RunResult:
        from prefalign.trainers.rm.train import train_rm  # torch: only when training

        return train_rm(config, resume=resume, tune_process=True)

    return run_trainer(args, train, "rm train")


def run_rm_eval(args: argparse.Namespace) -> int:
    from prefalign.eval.reward import RewardEvalOptions, run_reward_eval
    from prefalign.eval.reward_summary import format_reward_headline

    options = RewardEvalOptions(
        pairs=tuple(args.pairs), calibration=tuple(args.calibration),
        dpo_run=args.dpo, max_pairs=args.max_pairs, seed=args.seed,
        batch_size=args.batch_size, cpu_matmul=args.cpu_matmul)
    results = run_reward_eval(args.run_dir, args.out, options)
    print(format_reward_headline(results))
    print(f"report: {args.out / 'report.html'}  (eval.json, summary.md, pairs.csv beside it; "
          f"{results['elapsed_seconds']:.0f} s)")
    return 0


def run_rm_score(args: argparse.Namespace) -> int:
    from prefalign.eval.reward_score import score_file

    count = score_file(args.run_dir, args.input, args.output, batch_size=args.batch_size,
                       matmul=args.cpu_matmul)
    print(f"scored {count} row(s) into {args.output}")
    return 0
