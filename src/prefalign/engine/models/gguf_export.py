"""Write a Llama-architecture model and its byte-level BPE tokenizer as one GGUF file, the format
llama.cpp (and the tools built on it) run, with the `gguf` package.

The file holds llama.cpp's metadata for the architecture, the tokenizer (tokens, merges, token
types, special ids, chat template) and the tensors under llama.cpp's names (`blk.N.attn_q`, ...,
from gguf's own name map), in float32 or float16 (1-D tensors, the norms, stay float32, as
llama.cpp keeps them). llama.cpp stores the query and key projections with each head's rows
reordered for its rotary embedding: `permute_for_rotary` applies that order, and readers
(llama.cpp, transformers' `gguf_file=` loader) rely on it. Other architectures, and Llama
variants the metadata here does not describe (biases, rope scaling, another activation), are
refused by name; `prefalign export --to hf` writes any of them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prefalign.data.template import end_of_turn_token_id

GGUF_DTYPES = ("float32", "float16")
ARCHITECTURE = "llama"
_LLAMA_CPP_PRE = {"byte_level": "gpt2", "digits_then_byte_level": "smollm"}


class GgufExportError(ValueError):
    """A model or tokenizer this GGUF writer cannot represent; the message names what."""


def write_gguf(model: nn.Module, tokenizer: Any, path: Path, *, dtype: str = "float32",
               name: str = "model", pre_tokenizer: str | None = None) -> Path:
    """Write `model` (a transformers Llama, adapters merged) and `tokenizer` to `path` atomically.

    pre_tokenizer: llama.cpp's name for how text is split before BPE (`tokenizer.ggml.pre`);
    default: read off the tokenizer (plain byte-level: "gpt2"; digits split first: "smollm").
    """
    import gguf

    if dtype not in GGUF_DTYPES:
        raise GgufExportError(f"--dtype {dtype}: GGUF export writes {' or '.join(GGUF_DTYPES)}")
    config = model.config
    check_llama(config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch=ARCHITECTURE)
        _add_model_metadata(writer, config, name, dtype)
        _add_tokenizer(writer, tokenizer, config.vocab_size, pre_tokenizer)
        _add_tensors(writer, model, dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_llama(config: Any) -> None:
    """Refuse, by name, what llama.cpp's llama metadata written here would not describe."""
    if config.model_type != ARCHITECTURE:
        raise GgufExportError(f"GGUF export writes Llama-architecture models (SmolLM2, Llama, "
                              f"...); this model is {config.model_type!r}. Use --to hf instead")
    rope = getattr(config, "rope_parameters", None) or {}
    rope_type = rope.get("rope_type", "default") if isinstance(rope, dict) else "default"
    legacy_scaling = getattr(config, "rope_scaling", None)
    problems = {
        "attention_bias": getattr(config, "attention_bias", False),
        "mlp_bias": getattr(config, "mlp_bias", False),
        f"hidden_act {config.hidden_act!r}": config.hidden_act != "silu",
        f"rope type {rope_type!r}": rope_type != "default" or bool(
            legacy_scaling and legacy_scaling.get("rope_type", "default") != "default"),
    }
    found = [problem for problem, present in problems.items() if present]
    if found:
        raise GgufExportError(f"GGUF export does not write Llama models with {', '.join(found)}; "
                              "use --to hf instead")


def _add_model_metadata(writer: Any, config: Any, name: str, dtype: str) -> None:
    import gguf

    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta") if isinstance(rope, dict) else None
    writer.add_type("model")
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(theta if theta is not None else config.rope_theta))
    writer.add_rope_dimension_count(head_dim)
    if head_dim * config.num_attention_heads != config.hidden_size:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "float32"
                         else gguf.LlamaFileType.MOSTLY_F16)


def _add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int, pre: str | None) -> None:
    """Tokens (padded to the model's vocabulary with unused ones), merges, types, ids, template."""
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    pre = pre or llama_cpp_pre_tokenizer(spec)
    if len(tokenizer) > vocab_size:
        raise GgufExportError(f"the tokenizer has {len(tokenizer)} tokens, more than the model's "
                              f"{vocab_size} embeddings")
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    added = tokenizer.added_tokens_decoder
    types = [gguf.TokenType.NORMAL] * len(tokens)
    for index, token in added.items():
        if index < len(types):
            types[index] = gguf.TokenType.CONTROL if token.special else gguf.TokenType.USER_DEFINED
    padding = vocab_size - len(tokens)  # rows the model has beyond the tokenizer, as llama.cpp
    tokens += [f"[PAD{index}]" for index in range(len(tokens), vocab_size)]
    types += [gguf.TokenType.UNUSED] * padding
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m)
                             for m in spec["model"].get("merges", [])])
    _add_special_ids(writer, tokenizer)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def llama_cpp_pre_tokenizer(spec: dict[str, Any]) -> str:
    """llama.cpp's `tokenizer.ggml.pre` for a tokenizer.json `spec` of a byte-level BPE."""
    if spec["model"].get("type") != "BPE" or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        kind = spec["model"].get("type")
        raise GgufExportError(f"GGUF export writes byte-level BPE tokenizers (GPT-2 style, as "
                              f"SmolLM2's); this tokenizer is {kind!r}. Use --to hf instead")
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [(step.get("type"), step.get("individual_digits"), step.get("use_regex"))
             for step in steps]
    if kinds == [("ByteLevel", None, True)]:
        return _LLAMA_CPP_PRE["byte_level"]
    if kinds == [("Digits", True, None), ("ByteLevel", None, True)]:
        return _LLAMA_CPP_PRE["digits_then_byte_level"]
    raise GgufExportError(f"the tokenizer's pre-tokenizer {json.dumps(pre)[:200]} has no "
                          "llama.cpp name known here; use --to hf and llama.cpp's own converter")


def _add_special_ids(writer: Any, tokenizer: Any) -> None:
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id,
           "unk": tokenizer.unk_token_id, "pad": tokenizer.pad_token_id}
    adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id,
              "unk": writer.add_unk_token_id, "pad": writer.add_pad_token_id}
    for role, token_id in ids.items():
        if token_id is not None:
            adders[role](int(token_id))
    writer.add_eot_token_id(end_of_turn_token_id(tokenizer))
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a")
    writer.add_add_bos_token(bool(full[:1] != plain[:1] and full[0] == ids["bos"]))
    writer.add_add_eos_token(bool(full[-1:] != plain[-1:] and full[-1] == ids["eos"]))


def _add_tensors(writer: Any, model: nn.Module, dtype: str) -> None:
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads = {"attn_q": config.num_attention_heads,
             "attn_k": config.num_key_value_heads or config.num_attention_heads}
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # no output.weight: readers tie the projection to token_embd
        base, _, suffix = hf_name.rpartition(".")
        gguf_base = names.get_name(base)
        if gguf_base is None:
            raise GgufExportError(f"tensor {hf_name} has no llama.cpp name")
        array = tensor.detach().to(torch.float32).cpu().numpy()
        kind = gguf_base.rsplit(".", 1)[-1]
        if kind in heads:
            array = permute_for_rotary(array, heads[kind])
        if dtype == "float16" and array.ndim > 1:
            array = array.astype(np.float16)
        writer.add_tensor(f"{gguf_base}.{suffix}", array)


def permute_for_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's row order for a q or k projection (out, in): within each head, the rows of
    the two rotary halves [x0..x(d/2-1) | y0..y(d/2-1)] interleaved as x0 y0 x1 y1 ..."""
    rows = weight.shape[0]
    halves = weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])  # (H, 2, d/2, in)
    return halves.swapaxes(1, 2).reshape(weight.shape)
