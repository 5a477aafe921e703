"""Builders of tiny but real Llama causal LMs (and saved model directories) for train tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase


def tiny_llama(tokenizer: PreTrainedTokenizerBase, seed: int = 0, **overrides: Any) -> LlamaForCausalLM:
    """A 2-layer, 32-wide Llama over the tokenizer's vocabulary, float32, in eval mode.

    The same seed gives the same weights. `overrides` replace LlamaConfig fields
    (e.g. `attention_dropout=0.1`, `tie_word_embeddings=False`).
    """
    settings: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    settings.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**settings))
    return model.eval()


def tiny_model_dir(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, seed: int = 0, **overrides: Any
) -> Path:
    """Save `tiny_llama(tokenizer, seed, **overrides)` and the tokenizer under tmp_path/"tiny-model".

    Weights are written as model.safetensors, as `load_model` requires.
    """
    directory = Path(tmp_path) / "tiny-model"
    model = tiny_llama(tokenizer, seed=seed, **overrides)
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def stopping_llama(tokenizer: PreTrainedTokenizerBase, stop_token: str = "<|im_end|>",
                   scale: float = 3.0, seed: int = 0) -> LlamaForCausalLM:
    """A tiny Llama whose output row for `stop_token` is scaled up, so that greedy decoding
    stops after a prompt-dependent number of tokens (1 to 12 on tests/eval/test_generate.py's
    prompts) or not at all. initializer_range 0.2 keeps greedy outputs varied (at 0.02 every
    token is the same)."""
    model = tiny_llama(tokenizer, seed=seed, initializer_range=0.2, tie_word_embeddings=False)
    with torch.no_grad():
        model.lm_head.weight[tokenizer.convert_tokens_to_ids(stop_token)] *= scale
    return model
