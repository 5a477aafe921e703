"""Write a tiny, randomly initialised Llama with SmolLM2's tokenizer, for configs/tiny.yaml.

    python scripts/make_tiny_model.py [OUT_DIR]      # default: runs/tiny-model

The model has 2 layers and hidden size 64 (~3.2M parameters, nearly all in the 49,152-token
embedding, tied to the output layer). It uses SmolLM2's real tokenizer and chat template, so the
bundled data tokenizes exactly as for the default model; the weights are random (seed 0), so a
run on it tests the machinery, not alignment. Saved as safetensors with the tokenizer beside it.
"""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_OUT = Path("runs/tiny-model")


def build_tiny_model(tokenizer, seed: int = 0):
    """A 2-layer LlamaForCausalLM sized to `tokenizer`, initialised from `seed`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def write_tiny_model(out_dir: Path, tokenizer, seed: int = 0) -> Path:
    """Save the tiny model (safetensors) and `tokenizer` to `out_dir`; returns `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    build_tiny_model(tokenizer, seed).save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str]) -> int:
    from prefalign.data.tokenizer import load_tokenizer
    from prefalign.sources import DEFAULT_MODEL

    out_dir = Path(argv[0]) if argv else DEFAULT_OUT
    write_tiny_model(out_dir, load_tokenizer(DEFAULT_MODEL))
    print(f"wrote a tiny Llama with {DEFAULT_MODEL}'s tokenizer to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
