"""What of a causal LM's own forward the scorers compute themselves, and what they refuse.

Both scorers run the model's decoder (embeddings, blocks, final norm) and project its hidden
states to the vocabulary themselves (`chunked`), so what a model's `...ForCausalLM.forward` does
to its logits after the projection is read from its config and repeated (`logit_transform`). The
padded scorer leaves everything else to the model. The packed scorer also replaces the model's
attention masks with its layout's (`packed_attention`: sliding windows per layer, soft-capped
attention through the model's eager function), which describes only attention-based token
mixing, causal and full or windowed; what else would change the result it refuses by name
(`check_packed`), as it does rotary embeddings whose frequencies depend on the batch
(`check_positions`, both scorers).

`TESTED_ARCHITECTURES` are checked by tests/engine/test_architectures.py: both scorers, log-probs
and gradients, against the model's own unpadded forward with full logits, within and beyond the
sliding window. Other architectures go through the same checks, untested (`untested_warning`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from prefalign.engine.forward.chunked import LogitTransform
from prefalign.engine.forward.model_parts import causal_lm_of, decoder_blocks

TESTED_ARCHITECTURES = (
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
    "Phi3ForCausalLM", "Olmo2ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM",
    "CohereForCausalLM", "GraniteForCausalLM",
)  # fmt: skip
PACKED_ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")
MASKED_LAYER_TYPES = ("full_attention", "sliding_attention")
# rope types whose frequencies follow the longest sequence of the forward (max position id + 1)
BATCH_DEPENDENT_ROPE = ("dynamic", "longrope")
PADDED = "set train.scorer: padded"


class UnsupportedModelError(ValueError):
    """A model feature a scorer cannot compute exactly; the message names it and what to set."""


def logit_transform(model: nn.Module) -> LogitTransform:
    """The model's logits after its projection: Cohere's `logit_scale` multiplies them,
    Granite's `logits_scaling` divides them, Gemma's `final_logit_softcapping` caps them."""
    config = causal_lm_of(model).config
    scale = 1.0
    if getattr(config, "logit_scale", None) is not None:
        scale *= float(config.logit_scale)
    if getattr(config, "logits_scaling", None) is not None:
        scale /= float(config.logits_scaling)
    softcap = getattr(config, "final_logit_softcapping", None)
    return LogitTransform(scale=scale, softcap=None if softcap is None else float(softcap))


def check_packed(model: nn.Module) -> None:
    """Raise UnsupportedModelError unless the packed scorer computes this model's forward."""
    lm = causal_lm_of(model)
    config, name = lm.config, type(lm).__name__
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in PACKED_ATTENTION_IMPLEMENTATIONS:
        _refuse(name, f"attn_implementation {implementation!r} cannot take the packed scorer's "
                      "attention masks (it needs 'sdpa' or 'eager'); load the model with "
                      f"attn_implementation='sdpa' or {PADDED}", remedy=False)
    if getattr(config, "use_bidirectional_attention", False):
        _refuse(name, "bidirectional attention (use_bidirectional_attention=True) is not "
                      "computed by the packed scorer, whose masks are causal")
    if getattr(config, "attention_chunk_size", None) is not None:
        _refuse(name, f"chunked attention (attention_chunk_size={config.attention_chunk_size}) "
                      "is not computed by the packed scorer")
    other_types = sorted(set(getattr(config, "layer_types", None) or ()) - set(MASKED_LAYER_TYPES))
    if other_types:
        _refuse(name, f"layers of type {other_types} (layer_types) are not computed by the "
                      "packed scorer, which handles full and sliding-window attention only")
    for block in decoder_blocks(model):
        if not isinstance(getattr(block, "self_attn", None), nn.Module):
            _refuse(name, f"its decoder block {type(block).__name__} has no self_attn; the "
                          "packed scorer keeps packed pairs apart by attention masks alone, "
                          "which cannot hold back recurrent or convolutional state")


def check_windows_applied(model: nn.Module, windows_seen: set[int], longest: int) -> None:
    """After a packed forward: a config that sets a sliding window shorter than the longest
    sequence must have had its layers report it to the attention function (as transformers'
    layers do for flash attention); otherwise the window would silently be missing."""
    lm = causal_lm_of(model)
    window = _configured_window(lm.config)
    if window is not None and longest > window and not windows_seen:
        _refuse(type(lm).__name__,
                f"sliding-window attention (sliding_window={window}) is not reported by its "
                "attention layers, so the packed scorer cannot apply it to sequences longer "
                "than the window")


def check_positions(model: nn.Module, longest: int) -> None:
    """Rotary embeddings of type dynamic or longrope pick their frequencies from the longest
    sequence in the forward, so in a batch whose longest sequence passes their threshold the
    shorter sequences are not scored as the model scores them alone: refuse such batches."""
    lm = causal_lm_of(model)
    for rope_type, threshold in _batch_dependent_rope(lm.config):
        if longest > threshold:
            _refuse(type(lm).__name__,
                    f"rotary embeddings of rope_type {rope_type!r} (rope_parameters) change "
                    f"with the longest sequence of a batch past {threshold} tokens, and this "
                    f"batch's is {longest}, so shorter sequences would not be scored as the "
                    f"model scores them; set data.max_length to at most {threshold}",
                    remedy=False)


def untested_warning(model: nn.Module) -> str | None:
    """A warning for architectures outside `TESTED_ARCHITECTURES`, else None."""
    name = type(causal_lm_of(model)).__name__
    if name in TESTED_ARCHITECTURES:
        return None
    return (f"{name} is not among the architectures whose scores prefalign tests against the "
            f"model's own forward ({', '.join(TESTED_ARCHITECTURES)}); the features it knows "
            "are checked, others could make the scores differ from the model's")


def _configured_window(config: Any) -> int | None:
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if window is None or (layer_types is not None and "sliding_attention" not in layer_types):
        return None
    return int(window)


def _batch_dependent_rope(config: Any) -> list[tuple[str, int]]:
    """(rope_type, threshold) of each batch-dependent rotary embedding of the model."""
    parameters = getattr(config, "rope_parameters", None) or {}
    if not isinstance(parameters, Mapping):
        return []
    per_layer_type = "rope_type" not in parameters
    groups = parameters.values() if per_layer_type else [parameters]
    found = []
    for group in groups:
        rope_type = group.get("rope_type") if isinstance(group, Mapping) else None
        if rope_type in BATCH_DEPENDENT_ROPE:
            threshold = config.max_position_embeddings
            if rope_type == "longrope":
                threshold = group.get("original_max_position_embeddings", threshold)
            found.append((rope_type, int(threshold)))
    return found


def _refuse(name: str, problem: str, *, remedy: bool = True) -> None:
    """Raise naming the model class and the feature; `remedy`: add that the padded scorer,
    which runs the model's own attention, computes it."""
    raise UnsupportedModelError(f"{name}: {problem}" + (f"; {PADDED}" if remedy else ""))
