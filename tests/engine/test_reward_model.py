"""Building the reward model: the decoder kept, the head's seeded start, LoRA on the decoder
with the head trained whole, a starting adapter merged, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from prefalign.config import LoraSection, ModelSection
from prefalign.engine.forward.reward import sequence_rewards
from prefalign.engine.models.load import ModelLoadError
from prefalign.engine.models.reward import (
    load_reward_final,
    load_reward_model,
    reward_head,
    reward_model_from,
)
from tiny_models import tiny_llama, tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer)


def _sequences(tokenizer) -> list[list[int]]:
    return [tokenizer.encode("Hello! How are you today?"),
            tokenizer.encode("The capital of France is Paris.")]


def test_the_decoder_is_the_causal_lms_own(tiny_tokenizer):
    causal = tiny_llama(tiny_tokenizer)
    reward = reward_model_from(causal, pad_token_id=tiny_tokenizer.pad_token_id, seed=0)
    assert reward.model is causal.model and reward.config is causal.config
    assert reward.config.num_labels == 1 and reward.config.pad_token_id == tiny_tokenizer.pad_token_id
    assert reward.get_output_embeddings() is None
    assert not any(tensor.is_meta for tensor in reward.state_dict().values())


def test_the_head_starts_from_the_seed(tiny_tokenizer):
    """N(0, 1/(H + 1)): for H = 32 the standard deviation is 1/√33 ≈ 0.174."""
    heads = [reward_head(reward_model_from(tiny_llama(tiny_tokenizer), pad_token_id=3,
                                           seed=seed)).weight for seed in (5, 5, 6)]
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])
    big = reward_head(reward_model_from(tiny_llama(tiny_tokenizer, hidden_size=512,
                                                   intermediate_size=64, num_attention_heads=4),
                                        pad_token_id=3, seed=0)).weight
    assert big.std().item() == pytest.approx(513 ** -0.5, rel=0.1)
    assert abs(big.mean().item()) < 0.02


def test_lora_trains_the_decoder_adapter_and_the_whole_head(model_dir):
    lora = LoraSection(enabled=True, r=4, target_modules=("all-linear",), merge_on_save=True)
    loaded = load_reward_model(ModelSection(source=str(model_dir)), lora, seed=0)
    trainable = [name for name, p in loaded.model.named_parameters() if p.requires_grad]
    assert any("score.modules_to_save" in name for name in trainable)
    assert all("lora_" in name or "score.modules_to_save" in name for name in trainable)
    assert not any("score.lora_" in name or "score.base_layer" in name
                   for name, _ in loaded.model.named_parameters())


def test_a_starting_adapter_is_merged_into_the_decoder(model_dir, tmp_path, tiny_tokenizer):
    adapter = get_peft_model(tiny_llama(tiny_tokenizer),
                             LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in adapter.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    adapter.save_pretrained(str(tmp_path / "adapter"))
    merged = adapter.merge_and_unload()
    section = ModelSection(source=str(model_dir), adapter=str(tmp_path / "adapter"))
    loaded = load_reward_model(section, LoraSection(), seed=0)
    assert loaded.adapter_hash and not loaded.lora
    weight = loaded.model.model.layers[0].self_attn.q_proj.weight
    torch.testing.assert_close(weight, merged.model.layers[0].self_attn.q_proj.weight)
    assert weight.requires_grad


def test_gradient_checkpointing_scores_the_same(model_dir, tiny_tokenizer):
    plain = load_reward_model(ModelSection(source=str(model_dir)), LoraSection(), seed=0)
    recomputed = load_reward_model(ModelSection(source=str(model_dir),
                                                gradient_checkpointing=True), LoraSection(), seed=0)
    sequences = _sequences(tiny_tokenizer)
    torch.testing.assert_close(sequence_rewards(recomputed.model, sequences),
                               sequence_rewards(plain.model, sequences))


def test_a_classifier_with_more_labels_is_not_a_reward_model(tmp_path, tiny_tokenizer):
    reward = reward_model_from(tiny_llama(tiny_tokenizer), pad_token_id=3, seed=0)
    reward.config.num_labels = 2
    reward.score = torch.nn.Linear(32, 2, bias=False)
    reward.save_pretrained(str(tmp_path / "classifier"))
    with pytest.raises(ModelLoadError, match="2 labels"):
        load_reward_final(tmp_path / "classifier")
