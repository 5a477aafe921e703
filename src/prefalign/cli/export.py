"""`prefalign export`: a finished run's model as one GGUF file or a self-contained HF directory."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Export RUN_DIR/final with any LoRA adapter merged into its base, the tokenizer and the chat
template. --to gguf writes one file that llama.cpp and the tools built on it run (Llama-
architecture models with byte-level BPE tokenizers, such as SmolLM2). --to hf writes a
directory that AutoModelForCausalLM and AutoTokenizer load on their own: model.safetensors,
config.json, generation_config.json (stopping at the chat template's end-of-turn token),
tokenizer files and chat_template.jinja.
"""

EPILOG = """\
examples:
  prefalign export runs/dpo-lora --to gguf -o dpo-lora.gguf
  prefalign export runs/dpo-lora --to gguf -o dpo-lora-f16.gguf --dtype float16
  prefalign export runs/dpo-lora --to hf -o exported/dpo-lora

exit codes: 0 written; 2 no final/ in RUN_DIR, the output exists (pass --force), or the model
or tokenizer cannot be written in that format.
"""


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("export", help="a run's model as a GGUF file or an HF directory",
                            description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (runs/NAME)")
    p.add_argument("--to", required=True, choices=("gguf", "hf"), help="the format to write")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="PATH",
                   help="FILE.gguf for --to gguf, a directory for --to hf")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="weight type (default float32, the weights as trained; bfloat16: hf only)")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from prefalign.engine.models.export import export_run  # torch, transformers: only here

    written = export_run(args.run_dir, args.to, args.output, dtype=args.dtype, force=args.force)
    print(f"wrote {written}")
    return 0
