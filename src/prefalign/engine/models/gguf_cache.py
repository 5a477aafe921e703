"""A safetensors copy of a GGUF model's dequantized weights, so only the first load converts.

transformers parses and dequantizes a GGUF file on every `from_pretrained` (16-27 s for
SmolLM2-135M on 2 cores). The first load saves the float32 weights and config under
`$PREFALIGN_CACHE/models/<key>/` (key: the GGUF file's path, size, mtime and the transformers
version, as for the tokenizer cache); later loads read that directory (about a second), once
its files match the SHA256SUMS written beside them (an entry that fails is rebuilt).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from prefalign.data.tokenizer import cache_root, gguf_cache_key
from prefalign.integrity import check_checksums, write_checksums
from prefalign.sources import ModelSource
from prefalign.storage import storage_error

logger = logging.getLogger(__name__)
_COMPLETE = "COMPLETE"


def cached_gguf_dir(source: ModelSource) -> Path:
    """Where the dequantized copy of `source`'s GGUF file lives (it may not exist yet)."""
    assert source.gguf_path is not None
    return cache_root() / "models" / gguf_cache_key(source.gguf_path)


def load_gguf_model(source: ModelSource, dtype: torch.dtype, **kwargs: Any) -> PreTrainedModel:
    """The dequantized model of a GGUF source in `dtype`, from the cache when it is there."""
    cached = cached_gguf_dir(source)
    check = check_checksums(cached) if (cached / _COMPLETE).is_file() else None
    if check is not None and not check.ok:  # damaged in place: never used, rebuilt
        logger.warning("rebuilding the model cache %s: %s", cached, check.detail)
        shutil.rmtree(cached, ignore_errors=True)
    elif check is not None:
        try:
            return AutoModelForCausalLM.from_pretrained(
                str(cached), dtype=dtype, use_safetensors=True, local_files_only=True, **kwargs
            )
        except Exception as error:  # a damaged cache entry is rebuilt, not fatal
            logger.warning("ignoring unreadable model cache %s: %s", cached, error)
            shutil.rmtree(cached, ignore_errors=True)
    from transformers import GgufConfig

    # Without dequantize the model stays flagged as quantized and peft refuses to train it.
    model = AutoModelForCausalLM.from_pretrained(
        str(source.path), dtype=torch.float32, quantization_config=GgufConfig(dequantize=True),
        **source.pretrained_kwargs(), **kwargs,
    )
    _save_atomically(model, cached)
    return model.to(dtype)


def _save_atomically(model: PreTrainedModel, target: Path) -> None:
    """save_pretrained into a temp dir beside `target`, then rename; failures only warn."""
    staging = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        model.save_pretrained(staging, safe_serialization=True)
        write_checksums(staging)
        (staging / _COMPLETE).write_text("ok\n", encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        staging.replace(target)
    except Exception as error:  # a read-only or full cache must not stop training
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        found = storage_error(error, target)
        if found is None and not isinstance(error, OSError):
            raise
        logger.warning("could not cache the dequantized model: %s", found or error)
