"""`prefalign generate`: N sampled responses per prompt of a prompt file, into a JSONL file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Sample N responses to every prompt of FILE from MODEL_OR_RUN (the alias smollm2-135m-instruct,
a .gguf file, a model directory, or a run directory, whose final/ model is used) and write one
JSON row per sample to OUT: prompt_id, sample (0..N-1), text, tokens (generated tokens, the
end-of-turn token included), finish_reason (end_of_turn | length), the prompt, and the prompt
row's other columns. OUT.manifest.json records the model's weight hash, the chat template, the
settings and the prompt file's sha256.

Each prompt is prefilled once and its KV cache serves all N samples; decoding stops at the
chat template's end-of-turn token or at --max-new-tokens. Sample i of a prompt is drawn from a
random stream seeded by (--seed, prompt id, i): the same command gives the same samples.
Each prompt's rows are written at once and flushed, so a job stopped any way (Ctrl-C, a kill,
a crash) is continued by running the same command again: done prompts are kept, none is
written twice. A different model, template, setting or prompt file is refused.

FILE: JSONL with a 'prompt' per row (a string, or a list of {role, content} messages ending
with a user turn), an optional 'id' (default FILE-STEM:LINE), and any other columns.
"""

EPILOG = """\
examples:
  prefalign generate smollm2-135m-instruct --prompts prompts.jsonl -n 8 -o samples.jsonl
  prefalign generate runs/demo --prompts prompts.jsonl -n 4 --temperature 0.7 --top-p 0.9 \\
      --max-new-tokens 128 -o runs/demo/samples.jsonl
  prefalign generate runs/demo --prompts prompts.jsonl --greedy -o greedy.jsonl

exit codes: 0 done; 1 invalid prompt file (FILE:LINE: FIELD: message); 2 bad option, missing
file, or an OUT written by a different job; 130 interrupted (run the same command to continue).
"""

DEFAULT_ROWS = 64  # sequences decoded together by default: fastest measured on 2 CPU cores


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("generate", help="sample N responses per prompt into a JSONL file",
                            description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL_OR_RUN", help="model source or run directory")
    p.add_argument("--prompts", type=Path, required=True, metavar="FILE", help="prompt file")
    p.add_argument("-n", "--samples", type=int, default=1, metavar="N",
                   help="responses per prompt (default 1)")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="SAMPLES.jsonl")
    p.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus cut (1: none)")
    p.add_argument("--max-new-tokens", type=int, default=256, metavar="N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None, metavar="P",
                   help=f"prompts decoded together (default: {DEFAULT_ROWS} // N, at least 1); "
                        f"changes speed only, never the samples")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="default: the run's dtype, float32 for a model source")
    p.add_argument("--cpu-matmul", choices=("auto", "onednn", "torch"), default="auto",
                   help="float32 CPU products through oneDNN (auto: on x86-64) or torch's own")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_generate)


def settings_from_args(args: argparse.Namespace):
    from prefalign.engine.sampling import DecodeSettings

    batch_size = args.batch_size or max(1, DEFAULT_ROWS // max(args.samples, 1))
    return DecodeSettings(do_sample=not args.greedy, temperature=args.temperature,
                          top_p=args.top_p, top_k=args.top_k,
                          max_new_tokens=args.max_new_tokens, seed=args.seed,
                          num_samples=args.samples, batch_size=batch_size)


def run_generate(args: argparse.Namespace) -> int:
    from prefalign.engine.forward.onednn import cpu_matmul
    from prefalign.engine.models.resolve import load_model_or_run
    from prefalign.engine.sampling.job import generate_file
    from prefalign.engine.sampling.prompts import read_prompt_file

    settings = settings_from_args(args)  # bad values fail here, before any model loads
    prompts = read_prompt_file(args.prompts)  # and a bad prompt file too
    resolved = load_model_or_run(args.model, args.dtype)
    try:
        with cpu_matmul(args.cpu_matmul):
            summary = generate_file(resolved, args.prompts, prompts, args.out, settings,
                                    progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"\nprefalign: interrupted; the prompts done so far are in {args.out}; run the "
              f"same command to continue", file=sys.stderr)
        return 130
    resumed = f", {summary.resumed} of them done before" if summary.resumed else ""
    rate = f", {summary.tokens / summary.seconds:.0f} tokens/s" if summary.seconds > 0 else ""
    print(f"{summary.prompts} prompts × {settings.num_samples} samples in {summary.path}"
          f"{resumed}; wrote {summary.rows} rows, {summary.tokens} tokens{rate}")
    return 0
