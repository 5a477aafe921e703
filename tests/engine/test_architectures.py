"""Both scorers against each architecture's own forward, within and beyond its sliding window.

Every architecture the engine claims (`TESTED_ARCHITECTURES`) is built here from its transformers
config: 2 layers, hidden 32, the tiny tokenizer's vocabulary, random weights, float32, and a
sliding window of WINDOW = 8 tokens where it has one, so that sequences of 9 or more tokens run
past it. The reference is the model's own forward on each sequence alone, with full logits:
model(input_ids).logits -> log_softmax -> the response labels' log-probs, summed per sequence;
gradients are those of Σ chosen − 2·Σ rejected through it. Each scorer (padded; packed with
per-pair block attention, with whole rows, and with the tied-embedding gradient hand-off) must
give the same sums within 1e-4 nats and the same gradients within 1e-4 of each parameter's
largest gradient entry.

`FEATURES_OFF` names, per architecture, the config settings that switch off what the engine must
reproduce (soft-capping, logit scaling, the window); `test_the_features_change_the_scores` shows
they move the model's own scores far beyond the tolerance, so agreement above is not vacuous.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import transformers
from test_packed import random_pairs

from prefalign.data.collate import collate_pairs
from prefalign.data.tokenize import IGNORE_INDEX
from prefalign.engine.forward.model_features import TESTED_ARCHITECTURES
from prefalign.engine.forward.packed import PackedPairScorer
from prefalign.engine.forward.scorer import PairScorer, sparse_tied_embedding_grad
from tiny import build_tiny_tokenizer

WINDOW = 8
LOGPS_TOLERANCE = 1e-4  # nats per summed sequence, float32
GRAD_TOLERANCE = 1e-4  # relative to each parameter's largest reference gradient entry
# (prompt, chosen, rejected) tokens: every sequence within the window, or most of them past it
LENGTHS = {
    "short": [(3, 2, 4), (2, 3, 1), (4, 1, 2)],
    "long": [(10, 6, 7), (4, 12, 3), (13, 2, 9), (2, 3, 1)],
}


@dataclass(frozen=True)
class Architecture:
    """A causal LM class, its config class, and the settings that make it tiny."""

    model_class: str
    config_class: str
    settings: dict[str, Any]

    def build(self, **overrides: Any) -> torch.nn.Module:
        tokenizer = _tokenizer()
        settings = dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        settings.update(self.settings)
        settings.update(overrides)
        config = getattr(transformers, self.config_class)(**settings)
        torch.manual_seed(0)
        return getattr(transformers, self.model_class)(config).eval()


ARCHITECTURES = {
    "llama": Architecture("LlamaForCausalLM", "LlamaConfig", {"tie_word_embeddings": True}),
    "mistral": Architecture("MistralForCausalLM", "MistralConfig", {"sliding_window": WINDOW}),
    # the second layer slides (layers from max_window_layers on)
    "qwen2": Architecture("Qwen2ForCausalLM", "Qwen2Config", {
        "use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1}),
    "qwen3": Architecture("Qwen3ForCausalLM", "Qwen3Config", {
        "use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1}),
    "phi3": Architecture("Phi3ForCausalLM", "Phi3Config", {"sliding_window": WINDOW}),
    "olmo2": Architecture("Olmo2ForCausalLM", "Olmo2Config", {}),
    # weights and caps large and small enough that soft-capping bends logits and attention scores
    "gemma2": Architecture("Gemma2ForCausalLM", "Gemma2Config", {
        "sliding_window": WINDOW, "initializer_range": 0.2, "final_logit_softcapping": 0.5,
        "attn_logit_softcapping": 0.5}),
    # text-only Gemma 3: sliding, full
    "gemma3": Architecture("Gemma3ForCausalLM", "Gemma3TextConfig", {
        "sliding_window": WINDOW, "layer_types": ["sliding_attention", "full_attention"],
        "initializer_range": 0.2, "final_logit_softcapping": 0.5}),
    "cohere": Architecture("CohereForCausalLM", "CohereConfig", {"logit_scale": 4.0}),
    "granite": Architecture("GraniteForCausalLM", "GraniteConfig", {
        "logits_scaling": 0.25, "embedding_multiplier": 2.0, "residual_multiplier": 0.5,
        "attention_multiplier": 0.5, "tie_word_embeddings": True}),
}

# each feature the engine must reproduce, switched off: the model's own scores must then differ
FULL = {"layer_types": ["full_attention", "full_attention"]}
FEATURES_OFF = {
    ("mistral", "window"): {"sliding_window": None},
    ("qwen2", "window"): {"use_sliding_window": False},
    ("qwen3", "window"): {"use_sliding_window": False},
    ("phi3", "window"): {"sliding_window": None},
    ("gemma2", "final soft-capping"): {"final_logit_softcapping": None},
    ("gemma2", "attention soft-capping"): {"attn_logit_softcapping": None},
    ("gemma2", "window"): FULL,
    ("gemma3", "final soft-capping"): {"final_logit_softcapping": None},
    ("gemma3", "window"): FULL,
    ("cohere", "logit scale"): {"logit_scale": 1.0},
    ("granite", "logits scaling"): {"logits_scaling": 1.0},
}

SCORERS = {
    "padded": lambda model: PairScorer(model),
    "packed-blocks": lambda model: PackedPairScorer(model, attention_blocks=True),
    "packed-rows": lambda model: PackedPairScorer(model, attention_blocks=False),
    "packed-tied": lambda model: (sparse_tied_embedding_grad(model), PackedPairScorer(model))[1],
}


@functools.cache
def _tokenizer():
    return build_tiny_tokenizer()


def _batch(length: str) -> dict[str, torch.Tensor]:
    tokenizer = _tokenizer()
    return collate_pairs(random_pairs(len(tokenizer), LENGTHS[length], seed=7),
                         tokenizer.pad_token_id)


def own_forward_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(2, B) summed response log-probs, chosen then rejected, each sequence alone through
    model(input_ids).logits."""
    sums = []
    for side in ("chosen", "rejected"):
        ids, keep = batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"].bool()
        for row in range(ids.shape[0]):
            tokens = ids[row][keep[row]][None]  # (1, T) unpadded
            labels = batch[f"{side}_labels"][row][keep[row]][1:]  # (T-1,) shifted
            logps = torch.log_softmax(model(input_ids=tokens).logits[0, :-1].float(), -1)
            scored = labels != IGNORE_INDEX
            sums.append(logps[scored].gather(1, labels[scored][:, None]).sum())
    return torch.stack(sums).view(2, -1)


def _objective_and_grads(model, logps: torch.Tensor):
    """Σ chosen − 2·Σ rejected backpropagated: the gradient of every parameter, by name."""
    model.zero_grad(set_to_none=True)
    (logps[0].sum() - 2 * logps[1].sum()).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@functools.cache
def _reference(name: str, length: str):
    model = ARCHITECTURES[name].build()
    logps = own_forward_logps(model, _batch(length))
    return logps.detach(), _objective_and_grads(model, logps)


@pytest.mark.parametrize("scorer", SCORERS)
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_scorers_equal_the_models_own_forward(name, length, scorer):
    reference, reference_grads = _reference(name, length)
    model = ARCHITECTURES[name].build()
    logps = SCORERS[scorer](model)(**_batch(length))
    scored = torch.stack([logps.chosen, logps.rejected])  # (2, B)
    torch.testing.assert_close(scored, reference, atol=LOGPS_TOLERANCE, rtol=0)
    grads = _objective_and_grads(model, scored)
    assert grads.keys() == reference_grads.keys()
    for parameter, expected in reference_grads.items():
        scale = expected.abs().max().item()
        torch.testing.assert_close(grads[parameter], expected, rtol=0,
                                   atol=GRAD_TOLERANCE * max(scale, 1e-6), msg=parameter)


@pytest.mark.parametrize(("name", "feature"), FEATURES_OFF, ids=" ".join)
def test_the_features_change_the_scores(name, feature):
    """Without its soft-capping, logit scale or window the model's own scores of the long batch
    move by more than 100x the tolerance: the agreement above depends on reproducing them."""
    batch = _batch("long")
    assert batch["chosen_attention_mask"].sum(dim=1).max() > WINDOW
    with torch.no_grad():
        model = ARCHITECTURES[name].build(**FEATURES_OFF[name, feature])
        plain = own_forward_logps(model, batch)
    assert (plain - _reference(name, "long")[0]).abs().max() > 100 * LOGPS_TOLERANCE


def test_every_claimed_architecture_is_tested():
    built = {ARCHITECTURES[name].model_class for name in ARCHITECTURES}
    assert built == set(TESTED_ARCHITECTURES)
