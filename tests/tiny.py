"""Builders of tiny but real tokenizers (and their GGUF files) for fast tests."""

from __future__ import annotations

import functools
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")
TINY_DEFAULT_SYSTEM = "You are a tiny test assistant."

# ChatML, shaped like SmolLM2's template: a default system turn when the messages have none,
# every turn closed by "<|im_end|>\n", and an open assistant header for generation.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + TINY_DEFAULT_SYSTEM + "<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Enough English, chat and whitespace patterns that common words become single tokens and
# "\n " / "\n\n" merge (as they do in SmolLM2's vocabulary), which the prefix tests rely on.
_CORPUS = [
    "You are a helpful assistant. You are a tiny test assistant.",
    "system user assistant system user assistant",
    "Hello! How are you today? I am fine, thank you for asking.",
    "What is the capital of France? The capital of France is Paris.",
    "Tell me a joke about a cat. Why did the cat sit on the computer?",
    "I'm sorry, but I can't help with that. Is there anything else I can do?",
    "Please explain how a bicycle works, step by step.",
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "def main():\n    return 42\n\n\nprint(main())\n  indented\n \n",
    "First line\n\nSecond paragraph\n Third\n  Fourth",
]


@functools.cache
def _tiny_backend() -> Tokenizer:
    backend = Tokenizer(models.BPE())
    # Byte-level, so any text (emoji, control characters, CJK) encodes without an unknown token.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return backend


def build_tiny_tokenizer(chat_template: str | None = TINY_CHAT_TEMPLATE) -> PreTrainedTokenizerFast:
    """A fresh byte-level BPE tokenizer (~400 tokens) with ChatML specials and chat template.

    Training is cached; each call returns a new wrapper so tests may mutate it freely.
    """
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_tiny_backend(),
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|pad|>",
    )
    tokenizer.chat_template = chat_template
    tokenizer.name_or_path = "tiny-test-tokenizer"
    return tokenizer


def write_tiny_gguf(path: Path) -> Path:
    """Write the tiny tokenizer as a tokenizer-only GGUF file (llama.cpp's "gpt2" BPE keys)."""
    import json

    import gguf

    spec = json.loads(_tiny_backend().to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    control, normal = gguf.TokenType.CONTROL, gguf.TokenType.NORMAL
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name("tiny-test")
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_block_count(1)
    writer.add_feed_forward_length(16)
    writer.add_head_count(1)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([control if t in TINY_SPECIAL_TOKENS else normal for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(vocab["<|im_start|>"])
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_unk_token_id(vocab["<|endoftext|>"])
    writer.add_chat_template(TINY_CHAT_TEMPLATE)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
