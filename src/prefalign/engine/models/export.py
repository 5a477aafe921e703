"""Export a finished run's model from `final/`: `hf`, a merged, self-contained Hugging Face
directory, or `gguf`, one file for llama.cpp and the tools built on it.

Either way a LoRA adapter is merged into its base, and the tokenizer and chat template go with
the weights. The HF directory holds model.safetensors, config.json, generation_config.json (eos:
the chat template's end-of-turn token, so generation stops at the end of a reply), the tokenizer
files and chat_template.jinja. Outputs are written beside their target and renamed into place, so
they are whole or absent; an existing output is replaced only with `force`.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prefalign.atomic import replace_dir
from prefalign.data.template import end_of_turn_token_id
from prefalign.engine.manifest import MANIFEST
from prefalign.engine.models.gguf_export import GGUF_DTYPES, write_gguf

FORMATS = ("hf", "gguf")
HF_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
FINAL = "final"
_ADAPTER_CONFIG = "adapter_config.json"


class ExportError(ValueError):
    """A run directory, output or option that cannot be exported; the message says which."""


def export_run(run_dir: Path, to: str, output: Path, *, dtype: str = "float32",
               force: bool = False) -> Path:
    """Export `run_dir/final` to `output` as `to` ("hf" or "gguf") in `dtype`; the output path.

    dtype: float32 (the weights as trained, and what llama.cpp's quantizer takes) or float16;
    bfloat16 too for hf.
    """
    run_dir, output = Path(run_dir), Path(output)
    _check_request(to, dtype, output, force)
    model, tokenizer = load_final(run_dir)
    if to == "hf":
        return write_hf_dir(model, tokenizer, output, dtype=dtype)
    return write_gguf(model, tokenizer, output, dtype=dtype, name=run_dir.name,
                      pre_tokenizer=source_pre_tokenizer(run_dir, len(tokenizer)))


def _check_request(to: str, dtype: str, output: Path, force: bool) -> None:
    if to not in FORMATS:
        raise ExportError(f"--to {to}: unknown format; choose {' or '.join(FORMATS)}")
    allowed = GGUF_DTYPES if to == "gguf" else tuple(HF_DTYPES)
    if dtype not in allowed:
        raise ExportError(f"--dtype {dtype}: --to {to} writes {', '.join(allowed)}")
    if output.exists() and not force:
        raise ExportError(f"{output} already exists; pass --force to replace it")
    if to == "gguf" and output.is_dir():
        raise ExportError(f"{output} is a directory; --to gguf writes one file (FILE.gguf)")
    if to == "hf" and output.is_file():
        raise ExportError(f"{output} is a file; --to hf writes a directory")


def load_final(run_dir: Path) -> tuple[nn.Module, Any]:
    """The run's final model in float32 with any LoRA adapter merged into its base, and its
    tokenizer; safetensors only, no remote code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = Path(run_dir) / FINAL
    if not final.is_dir():
        raise ExportError(f"{run_dir}: no {FINAL}/ directory to export{_outcome_note(run_dir)}")
    tokenizer = AutoTokenizer.from_pretrained(str(final), local_files_only=True)
    if (final / _ADAPTER_CONFIG).is_file():
        return _merged_adapter(final), tokenizer
    model = AutoModelForCausalLM.from_pretrained(
        str(final), dtype=torch.float32, use_safetensors=True, local_files_only=True)
    return model.eval(), tokenizer


def _merged_adapter(final: Path) -> nn.Module:
    """final/ holds a LoRA adapter: load its base and merge the adapter into it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter_config = json.loads((final / _ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base_path = Path(str(adapter_config.get("base_model_name_or_path") or ""))
    if not base_path.is_dir():
        raise ExportError(f"{final}: the adapter's base model {str(base_path)!r} (adapter_config."
                          "json, base_model_name_or_path) is not a local directory")
    base = AutoModelForCausalLM.from_pretrained(
        str(base_path), dtype=torch.float32, use_safetensors=True, local_files_only=True)
    return PeftModel.from_pretrained(base, str(final)).merge_and_unload().eval()


def _outcome_note(run_dir: Path) -> str:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return f" (and no {MANIFEST}: is this a run directory?)"
    outcome = json.loads(path.read_text(encoding="utf-8")).get("outcome")
    return f" (its manifest says the run's outcome is {outcome!r})"


def write_hf_dir(model: nn.Module, tokenizer: Any, output: Path, *, dtype: str) -> Path:
    """A self-contained directory `output`: weights in `dtype`, config, generation config (eos
    = end-of-turn token), tokenizer and chat template; built beside it, renamed into place."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".tmp-{output.name}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        stop_at_end_of_turn(model, tokenizer)
        model.to(HF_DTYPES[dtype]).save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        replace_dir(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def stop_at_end_of_turn(model: nn.Module, tokenizer: Any) -> None:
    """Set the model's generation config (saved as generation_config.json) to stop at the chat
    template's end-of-turn token, then the model's own eos; bos and pad from the tokenizer."""
    from transformers import GenerationConfig

    end_of_turn = end_of_turn_token_id(tokenizer)
    model_eos = model.config.eos_token_id
    others = model_eos if isinstance(model_eos, list) else [model_eos]
    eos = [end_of_turn, *(int(i) for i in others if i is not None and i != end_of_turn)]
    settings = getattr(model, "generation_config", None) or \
        GenerationConfig.from_model_config(model.config)
    settings.eos_token_id = eos[0] if len(eos) == 1 else eos
    settings.bos_token_id = tokenizer.bos_token_id
    settings.pad_token_id = tokenizer.pad_token_id
    model.generation_config = settings


def source_pre_tokenizer(run_dir: Path, vocabulary: int) -> str | None:
    """The source GGUF's llama.cpp pre-tokenizer name when the run started from a GGUF file with
    this vocabulary size (so llama.cpp splits text as it did for the source), else None."""
    from prefalign.sources import resolve_model_source

    try:
        manifest = json.loads((Path(run_dir) / MANIFEST).read_text(encoding="utf-8"))
        source = resolve_model_source(manifest["config"]["model"]["source"])
        if source.gguf_path is None:
            return None
        metadata = _gguf_metadata(source.gguf_path)
        if metadata["tokenizer.ggml.tokens"] != vocabulary:
            return None
        return str(metadata["tokenizer.ggml.pre"])
    except (OSError, KeyError, ValueError, TypeError) as error:
        print(f"prefalign: the source model's pre-tokenizer name is not readable ({error}); "
              "reading it off the tokenizer instead", file=sys.stderr)
        return None


def _gguf_metadata(path: Path) -> dict[str, Any]:
    """A GGUF file's metadata with arrays as their lengths. transformers' reader (5.x) takes
    milliseconds; gguf's GGUFReader, the fallback, parses every array (~9 s for SmolLM2)."""
    try:
        from transformers.integrations.gguf import read_gguf_metadata
    except ImportError:
        import gguf

        fields = gguf.GGUFReader(str(path)).fields
        return {"tokenizer.ggml.tokens": len(fields["tokenizer.ggml.tokens"].data),
                "tokenizer.ggml.pre": fields["tokenizer.ggml.pre"].contents()}
    return read_gguf_metadata(str(path))[0]
