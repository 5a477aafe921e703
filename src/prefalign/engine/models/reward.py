"""A reward model: a causal LM's decoder with a scalar `score` head, built as transformers'
`AutoModelForSequenceClassification` (num_labels = 1) builds it, so that `final/` reloads with
`AutoModelForSequenceClassification.from_pretrained` and scores the same.

The decoder keeps the causal LM's weights (the same modules, not a copy); its vocabulary
projection is dropped. The head starts from N(0, 1/(H + 1)) (Stiennon et al. 2020, "Learning to
summarize from human feedback", Appendix: reward model initialisation), drawn from the run seed.
The reward of a sequence is the head applied to the decoder's hidden state at its last token
whose id differs from `config.pad_token_id` — transformers' own rule, which the packed reward
forward (engine/forward/reward.py) follows. The config's pad token is the tokenizer's; where
that is also the end-of-turn token (SmolLM2), the reward is read at the reply's last token
before it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from prefalign.config import LoraSection, ModelSection
from prefalign.data.tokenizer import load_tokenizer
from prefalign.engine.forward.recompute import recompute_blocks
from prefalign.engine.forward.scorer import causal_lm_of
from prefalign.engine.models.load import (
    DTYPES,
    LoadedModel,
    ModelLoadError,
    adapter_files_hash,
    check_target_modules,
    load_base_model,
    load_reference_model,
    weight_hash,
)
from prefalign.sources import resolve_model_source

if TYPE_CHECKING:
    from transformers import PreTrainedModel

REWARD_HEAD = "score"  # the head's attribute in transformers' *ForSequenceClassification models


def reward_model_from(causal_lm: nn.Module, *, pad_token_id: int | None,
                      seed: int) -> PreTrainedModel:
    """The sequence-classification model of `causal_lm`'s architecture (num_labels = 1) around
    its decoder, with a fresh head drawn from `seed`. The causal LM's config object becomes the
    reward model's (num_labels and pad_token_id set), so both see the same settings."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    config = causal_lm.config
    try:
        model_class = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
    except KeyError:
        raise ModelLoadError(f"{type(causal_lm).__name__}: transformers has no sequence-"
                             "classification model of this architecture to build a reward "
                             "model from") from None
    config.num_labels = 1
    config.pad_token_id = pad_token_id
    with torch.device("meta"):  # the decoder is replaced below; only the head is made here
        reward = model_class(config)
    prefix = reward.base_model_prefix
    setattr(reward, prefix, getattr(causal_lm, causal_lm.base_model_prefix))
    decoder_weight = reward.get_input_embeddings().weight
    head = nn.Linear(config.hidden_size, 1, bias=False, device=decoder_weight.device,
                     dtype=decoder_weight.dtype)
    init_reward_head(head, seed)
    setattr(reward, REWARD_HEAD, head)
    _check_materialised(reward)
    reward.name_or_path = getattr(causal_lm, "name_or_path", "")
    return reward.train(causal_lm.training)


def init_reward_head(head: nn.Linear, seed: int) -> None:
    """Weights from N(0, 1/(H + 1)), H the hidden size, drawn from a generator seeded `seed`."""
    generator = torch.Generator().manual_seed(seed)
    std = (head.in_features + 1) ** -0.5
    values = torch.randn(head.weight.shape, generator=generator, dtype=torch.float32) * std
    with torch.no_grad():
        head.weight.copy_(values)


def _check_materialised(reward: nn.Module) -> None:
    left = [name for name, tensor in [*reward.named_parameters(), *reward.named_buffers()]
            if tensor.is_meta]
    if left:
        raise ModelLoadError(f"{type(reward).__name__}: parts other than the decoder and the "
                             f"head are not supported for reward models ({left[:3]})")


def reward_head(model: nn.Module) -> nn.Module:
    """The scalar head of a reward model (or of a peft wrapper of one)."""
    head = getattr(causal_lm_of(model), REWARD_HEAD, None)
    if head is None:
        raise ValueError(f"{type(causal_lm_of(model)).__name__} has no `{REWARD_HEAD}` head; "
                         "not a sequence-classification model")
    return head


def apply_reward_lora(model: PreTrainedModel, lora: LoraSection) -> nn.Module:
    """A fresh peft LoRA adapter on the decoder (task SEQ_CLS: peft trains and saves the whole
    `score` head beside the adapter)."""
    from peft import LoraConfig, get_peft_model

    if list(lora.target_modules) == ["all-linear"]:
        targets = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                          if isinstance(module, nn.Linear) and name != REWARD_HEAD})
    else:
        targets = list(lora.target_modules)
        check_target_modules(model, targets)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=targets, task_type="SEQ_CLS")
    return get_peft_model(model, config)


def load_reward_model(model: ModelSection, lora: LoraSection, *, seed: int) -> LoadedModel:
    """The reward model to train and its tokenizer: the base weights (with `model.adapter`
    merged in when given), a fresh head from `seed`, then a fresh LoRA when `lora.enabled`.
    weight_hash covers the starting decoder weights (the adapter merged)."""
    source = resolve_model_source(model.source)
    tokenizer = load_tokenizer(model.source, trust_remote_code=model.trust_remote_code)
    adapter_hash = None
    if model.adapter is not None:
        base = load_reference_model(model).requires_grad_(True)  # base + adapter, merged
        adapter_hash = adapter_files_hash(Path(model.adapter))
    else:
        base = load_base_model(model, source)
    base_hash = weight_hash(base)
    reward = reward_model_from(base, pad_token_id=tokenizer.pad_token_id, seed=seed)
    if model.gradient_checkpointing:
        mode = "pointwise" if model.gradient_checkpointing == "pointwise" else "blocks"
        recompute_blocks(reward, mode)
    trained = apply_reward_lora(reward, lora) if lora.enabled else reward
    return LoadedModel(model=trained, tokenizer=tokenizer, source=source, weight_hash=base_hash,
                       dtype=DTYPES[model.dtype], lora=lora.enabled, adapter=model.adapter,
                       adapter_hash=adapter_hash)


def load_reward_final(final_dir: str | Path, dtype: torch.dtype = torch.float32, *,
                      trust_remote_code: bool = False) -> PreTrainedModel:
    """A trained reward model's `final/` (safetensors only), in eval mode, without gradients."""
    from transformers import AutoModelForSequenceClassification

    reward = AutoModelForSequenceClassification.from_pretrained(
        str(final_dir), dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True,
        local_files_only=True)
    if reward.config.num_labels != 1:
        raise ModelLoadError(f"{final_dir}: a classifier with {reward.config.num_labels} labels, "
                             "not a reward model (num_labels 1)")
    reward.requires_grad_(False)
    return reward.eval()
