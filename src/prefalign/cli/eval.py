"""`prefalign eval`: did training do what we wanted, and what did it cost?"""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Evaluate a finished run against its reference (the model it started from) and write into
--out: eval.json (every number, decoder settings, the run's fingerprints), pairs.csv (per
held-out pair log-probs under both models), generations.jsonl (both models' answers to the
safety prompts), report.html (self-contained, with plots) and summary.md.

Measured: held-out reward accuracy beside the length-only baseline and the length-balanced
accuracy (95% CI), sliced by source and category; the same pairs under an alternate prompt
template; refusal of harmful prompts (AdvBench, HarmBench, XSTest unsafe) and over-refusal of
benign ones (XSTest safe, JBB benign) for both models, with 95% CIs; perplexity of held-out and
helpful-base chosen replies; KL(policy || reference) on sampled responses; response lengths.
With --samples, both models also reply to conversations taken from preference pairs, shown side
by side in the report beside the data's chosen reply.
The defaults (200 pairs, 100 + 100 prompts, 64 new tokens) took 506 s (8.4 minutes) for
SmolLM2-135M on 2 CPU cores.
"""

EPILOG = """\
examples:
  prefalign eval runs/demo --out runs/demo/eval
  prefalign eval runs/demo --pairs my-heldout.jsonl --prompts advbench xstest-safe --out ev
  prefalign eval runs/demo --reference path/to/other-model --max-pairs 0 --out ev
  prefalign eval runs/demo --prompts none --out ev        # pairs only, no generation
  prefalign eval runs/tone --pairs bundled:tone-heldout --samples bundled:tone-heldout --out ev

prompt sets: advbench, harmbench, xstest-unsafe (harmful); xstest-safe, jbb-benign (benign);
or a .jsonl/.csv file with a 'prompt' column (and 'kind': harmful|benign).
exit codes: 0 done; 1 invalid data (FILE:LINE: FIELD: message), a final/ that fails its
SHA256SUMS, or a full disk; 2 not a finished run directory, a bad option, or an output path
that cannot be written.
"""


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("eval", help="evaluate a run: held-out pairs, refusals, cost, report",
                            description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run (runs/NAME)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    p.add_argument("--reference", metavar="MODEL", default=None,
                   help="compare against this model (alias, HF directory or GGUF) instead of "
                        "the run's reference")
    p.add_argument("--pairs", nargs="+", metavar="FILE", default=(),
                   help="preference pairs to score (default: the run's held-out data)")
    p.add_argument("--max-pairs", type=int, default=200, metavar="N",
                   help="seeded sample of N pairs (default 200; 0 skips the pairs)")
    p.add_argument("--prompts", nargs="+", metavar="SET", default=None,
                   help="prompt sets or files for generation (default: all five; 'none' skips)")
    p.add_argument("--harmful", type=int, default=100, metavar="N", help="harmful prompts")
    p.add_argument("--benign", type=int, default=100, metavar="N", help="benign prompts")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N")
    p.add_argument("--sample", action="store_true",
                   help="sample instead of greedy decoding (with --temperature, --top-k, --top-p)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely (0: all)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--gen-batch-size", type=int, default=32, metavar="N",
                   help="prompts decoded together (default 32)")
    p.add_argument("--kl-prompts", type=int, default=32, metavar="N",
                   help="prompts to sample from the policy for the KL estimate (0 skips)")
    p.add_argument("--helpful-pairs", type=int, default=100, metavar="N",
                   help="hh-rlhf helpful-base pairs for perplexity (0 skips)")
    p.add_argument("--template", default="plain", metavar="NAME",
                   help="alternate prompt template for the robustness check: plain, "
                        "instruction, or none")
    p.add_argument("--template-pairs", type=int, default=100, metavar="N",
                   help="held-out pairs scored again under the alternate template (default 100)")
    p.add_argument("--samples", nargs="+", metavar="PATH", default=(),
                   help="preference pairs whose conversations both models answer, shown side by "
                        "side in the report (default: none)")
    p.add_argument("--max-samples", type=int, default=8, metavar="N",
                   help="seeded sample of N distinct conversations from --samples (default 8)")
    p.add_argument("--sample-max-new-tokens", type=int, default=128, metavar="N",
                   help="new tokens per sample reply (default 128: a whole short reply)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=2, metavar="N",
                   help="pairs per scoring forward (default 2: fastest measured on CPU; "
                        "raise it on a GPU)")
    p.add_argument("--cpu-matmul", choices=("auto", "onednn", "torch"), default="auto",
                   help="float32 CPU products: oneDNN (auto: on x86-64; ~2x faster than torch's "
                        "default BLAS on AMD CPUs) or torch's own (default: auto)")
    p.set_defaults(handler=run_eval_command)


def options_from_args(args: argparse.Namespace):
    from prefalign.eval.generate import DecodeSettings
    from prefalign.eval.runner import EvalOptions

    decoding = DecodeSettings(do_sample=args.sample, temperature=args.temperature,
                              top_p=args.top_p, top_k=args.top_k,
                              max_new_tokens=args.max_new_tokens,
                              seed=args.seed, batch_size=args.gen_batch_size)
    prompts = args.prompts
    if prompts is not None and [p.lower() for p in prompts] == ["none"]:
        prompts = ()
    return EvalOptions(
        reference=args.reference, pairs=tuple(args.pairs), max_pairs=args.max_pairs,
        prompt_sets=None if prompts is None else tuple(prompts), harmful=args.harmful,
        benign=args.benign, decoding=decoding, kl_prompts=args.kl_prompts,
        helpful_pairs=args.helpful_pairs,
        alternate_template=None if args.template.lower() == "none" else args.template,
        template_pairs=args.template_pairs, samples=tuple(args.samples),
        max_samples=args.max_samples, sample_max_new_tokens=args.sample_max_new_tokens,
        seed=args.seed, batch_size=args.batch_size, cpu_matmul=args.cpu_matmul,
    )


def run_eval_command(args: argparse.Namespace) -> int:
    from prefalign.eval.runner import run_eval  # torch, transformers: only when evaluating
    from prefalign.eval.summary import format_headline

    options = options_from_args(args)  # bad values fail here, before any model loads
    results = run_eval(args.run_dir, args.out, options)
    print(format_headline(results))
    print(f"report: {args.out / 'report.html'}  (eval.json, summary.md, pairs.csv, "
          f"generations.jsonl beside it; {results['elapsed_seconds']:.0f} s)")
    return 0
