"""final/: full, LoRA adapter and merged LoRA reload with AutoModelForCausalLM, same logits."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from prefalign.engine.models.final import save_final
from tiny_models import tiny_llama, tiny_model_dir

TOLERANCE = 1e-5


def _lora_policy(tokenizer, tmp_path) -> PeftModel:
    """A LoRA policy over a base saved on disk, with non-zero adapter weights (so it matters)."""
    base = LlamaForCausalLM.from_pretrained(str(tiny_model_dir(tmp_path, tokenizer)))
    policy = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1,
                                             target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    return policy


def _logits(model, tokenizer) -> torch.Tensor:
    input_ids = torch.tensor([tokenizer.encode("Hello! How are you today?")])  # (1, T)
    model.eval()
    with torch.no_grad():
        return model(input_ids=input_ids).logits  # (1, T, V)


def _assert_reloads_like(policy, tokenizer, final_dir) -> None:
    reloaded = AutoModelForCausalLM.from_pretrained(str(final_dir))
    expected = _logits(policy, tokenizer)
    assert torch.allclose(_logits(reloaded, tokenizer), expected, atol=TOLERANCE, rtol=0)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(str(final_dir))
    assert reloaded_tokenizer.chat_template == tokenizer.chat_template
    assert reloaded_tokenizer.encode("Hello there") == tokenizer.encode("Hello there")


def test_full_model(tiny_tokenizer, tmp_path):
    policy = tiny_llama(tiny_tokenizer, seed=1)
    written = save_final(policy, tiny_tokenizer, tmp_path / "final", merge=False,
                         base_is_gguf=False)
    assert written["kind"] == "full" and written["note"] is None
    assert "model.safetensors" in written["files"] and "config.json" in written["files"]
    assert not any(name.endswith((".bin", ".pt")) for name in written["files"])
    _assert_reloads_like(policy, tiny_tokenizer, tmp_path / "final")


def test_lora_adapter(tiny_tokenizer, tmp_path):
    policy = _lora_policy(tiny_tokenizer, tmp_path)
    written = save_final(policy, tiny_tokenizer, tmp_path / "final", merge=False,
                         base_is_gguf=False)
    assert written["kind"] == "adapter" and written["adapter"] is None
    assert {"adapter_model.safetensors", "adapter_config.json"} <= set(written["files"])
    assert "model.safetensors" not in written["files"]
    _assert_reloads_like(policy, tiny_tokenizer, tmp_path / "final")


@pytest.mark.parametrize("reason", ["asked", "gguf", "no_base_path"])
def test_lora_merged(tiny_tokenizer, tmp_path, reason):
    """Merged on request, or because transformers could not reload the base (GGUF, in memory)."""
    if reason == "no_base_path":
        base = tiny_llama(tiny_tokenizer, seed=2)
        policy = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                 target_modules=["q_proj", "v_proj"]))
    else:
        policy = _lora_policy(tiny_tokenizer, tmp_path)
    before = _logits(policy, tiny_tokenizer)
    written = save_final(policy, tiny_tokenizer, tmp_path / "final", merge=reason == "asked",
                         base_is_gguf=reason == "gguf")
    assert written["kind"] == "merged" and written["adapter"] == "adapter"
    assert (written["note"] is None) == (reason == "asked")
    assert "model.safetensors" in written["files"]
    assert "adapter_config.json" not in written["files"]
    assert "adapter/adapter_model.safetensors" in written["files"]
    # The live policy keeps its adapter and its outputs.
    assert isinstance(policy, PeftModel)
    assert any("lora_A" in name for name, _ in policy.named_parameters())
    assert torch.equal(_logits(policy, tiny_tokenizer), before)
    _assert_reloads_like(policy, tiny_tokenizer, tmp_path / "final")


def test_replaces_atomically(tiny_tokenizer, tmp_path, monkeypatch):
    """A second save replaces final/; one that fails midway leaves the previous final/ whole."""
    out_dir = tmp_path / "final"
    first = tiny_llama(tiny_tokenizer, seed=1)
    save_final(first, tiny_tokenizer, out_dir, merge=False, base_is_gguf=False)
    second = tiny_llama(tiny_tokenizer, seed=2)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    broken = AutoTokenizer.from_pretrained(str(out_dir))
    monkeypatch.setattr(broken, "save_pretrained", crash)
    with pytest.raises(OSError, match="disk full"):
        save_final(second, broken, out_dir, merge=False, base_is_gguf=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    _assert_reloads_like(first, tiny_tokenizer, out_dir)
    save_final(second, tiny_tokenizer, out_dir, merge=False, base_is_gguf=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    _assert_reloads_like(second, tiny_tokenizer, out_dir)
