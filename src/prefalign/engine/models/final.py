"""The run's `final/` directory: a model `AutoModelForCausalLM.from_pretrained` loads, with the
tokenizer and chat template beside it.

- full fine-tune: the whole model (safetensors).
- LoRA, merge=False: the adapter (adapter_model.safetensors + adapter_config.json); transformers
  loads it onto the base named in adapter_config.json.
- LoRA, merge=True, or a base that transformers cannot reload from the adapter config (a GGUF
  file, or a model with no path): the adapter merged into a copy of the base, saved as a full
  model; the adapter itself goes to `final/adapter/`.
The directory is assembled beside `out_dir` and renamed into place, so it is whole or absent,
with a SHA256SUMS file (`sha256sum -c` format) over every other file, which `prefalign verify`
and the evaluation check before using it. A full disk or a denied write is raised as a
`StorageError` naming `out_dir` and the bytes it needed.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from torch import nn

from prefalign.atomic import replace_dir
from prefalign.engine.forward.model_parts import causal_lm_of
from prefalign.integrity import write_checksums
from prefalign.storage import reporting_storage

ADAPTER_SUBDIR = "adapter"


def save_final(
    policy: nn.Module, tokenizer: Any, out_dir: Path, *, merge: bool, base_is_gguf: bool
) -> dict:
    """Write the final model and tokenizer to `out_dir` atomically; return what was written.

    Returns {"path", "kind": "full" | "adapter" | "merged", "adapter": sub-dir or None,
    "files": [...], "note": why the adapter was merged though not asked, or None}.
    Merging works on a deep copy, so the live policy keeps its adapter (and needs that much
    memory again for the copy).
    """
    out_dir = Path(out_dir)
    staging = out_dir.with_name(f".tmp-{out_dir.name}")
    with reporting_storage(out_dir, lambda: _saved_bytes(policy, merge)):
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            kind, adapter, note = _write_model(policy, staging, merge=merge,
                                               base_is_gguf=base_is_gguf)
            tokenizer.save_pretrained(str(staging))
            write_checksums(staging)
            files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
            for name in files:
                _fsync(staging / name)
            replace_dir(staging, out_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if note:
        print(f"prefalign: {note}", file=sys.stderr)
    return {"path": str(out_dir), "kind": kind, "adapter": adapter, "files": files, "note": note}


def _write_model(
    policy: nn.Module, directory: Path, *, merge: bool, base_is_gguf: bool
) -> tuple[str, str | None, str | None]:
    """Save into `directory`; returns (kind, adapter sub-dir or None, note or None)."""
    if not _is_peft(policy):
        causal_lm_of(policy).save_pretrained(str(directory), safe_serialization=True)
        return "full", None, None
    note = _why_merge_anyway(policy, base_is_gguf) if not merge else None
    if not merge and note is None:
        policy.save_pretrained(str(directory), safe_serialization=True)
        _absolute_base_path(directory)
        return "adapter", None, None
    merged = copy.deepcopy(policy).merge_and_unload()  # the live policy keeps its LoRA layers
    merged.save_pretrained(str(directory), safe_serialization=True)
    del merged
    # Beside, not in, final/: an adapter_config.json at the top would make transformers load
    # the (unloadable) base instead of the merged weights.
    policy.save_pretrained(str(directory / ADAPTER_SUBDIR), safe_serialization=True)
    return "merged", ADAPTER_SUBDIR, note


def _why_merge_anyway(policy: nn.Module, base_is_gguf: bool) -> str | None:
    if base_is_gguf:
        return ("the base model came from a GGUF file, which transformers cannot load from an "
                "adapter config, so final/ holds the merged model; the adapter alone is in "
                f"final/{ADAPTER_SUBDIR}/")
    if not _base_name_or_path(policy):
        return ("the base model has no path to reload it from, so final/ holds the merged "
                f"model; the adapter alone is in final/{ADAPTER_SUBDIR}/")
    return None


def _base_name_or_path(policy: nn.Module) -> str:
    """What peft writes as base_model_name_or_path (its config's, else the model's own)."""
    peft_config = policy.peft_config[policy.active_adapter]
    named = peft_config.base_model_name_or_path or getattr(causal_lm_of(policy), "name_or_path", "")
    return str(named or "")


def _absolute_base_path(directory: Path) -> None:
    """A relative base path in adapter_config.json would only resolve from the training cwd."""
    config_path = directory / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if base and Path(base).exists() and not Path(base).is_absolute():
        config["base_model_name_or_path"] = str(Path(base).resolve())
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def _is_peft(policy: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(policy, PeftModel)


def _saved_bytes(policy: nn.Module, merge: bool) -> int:
    """About the bytes `final/` takes: the adapter alone, or every distinct tensor once
    (tied weights share one; the merged model the base's size, its adapter on top)."""
    adapter = sum(p.nbytes for p in policy.parameters() if p.requires_grad) \
        if _is_peft(policy) else 0
    if adapter and not merge:
        return adapter
    distinct = {t.data_ptr(): t.nbytes for t in policy.state_dict().values()}
    return sum(distinct.values())


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
