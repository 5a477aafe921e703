"""The parts of a transformers causal LM (or of a peft wrapper of one) that the scorers use."""

from __future__ import annotations

from torch import Tensor, nn


def causal_lm_of(model: nn.Module) -> nn.Module:
    """The transformers causal LM inside a peft wrapper (adapter layers stay injected)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def decoder_of(model: nn.Module) -> nn.Module:
    """The decoder body (embeddings, layers, final norm) that yields `last_hidden_state`."""
    return causal_lm_of(model).get_decoder()


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of the decoder (the `layers` of transformers' decoders)."""
    blocks = getattr(decoder_of(model), "layers", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        name = type(causal_lm_of(model)).__name__
        raise ValueError(f"cannot find the decoder blocks of {name} (no `layers` list in its "
                         "decoder)")
    return list(blocks)


def output_weight(model: nn.Module) -> Tensor:
    """The output projection's weight (V, H); a bias on the projection is not supported."""
    head = causal_lm_of(model).get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ValueError("models whose output projection has a bias are not supported yet")
    return head.weight
