"""Activation checkpointing of the decoder blocks (`model.gradient_checkpointing`).

Each decoder block's `forward` runs under torch's non-reentrant checkpoint while training: its
activations are dropped after the forward pass and recomputed in the backward pass.

prefalign wraps the blocks itself instead of calling transformers' `gradient_checkpointing_enable`
because the recomputation must run what the forward pass ran, and two of prefalign's settings
hold only while the forward pass runs: the packed scorer's per-pair block attention
(`block_attention.split_attention`) and the oneDNN route of float32 products
(`onednn.cpu_matmul`, whose mode is not active when autograd recomputes). Recomputed without
them, a block saves other tensors and torch refuses ("a different number of tensors was saved",
"different metadata"): with transformers' checkpointing, every such run failed in its first
backward pass. The wrapper recomputes under the settings the forward pass saw.

As in transformers, only `forward` is recomputed, not the module's hooks: FSDP2 (`train.fsdp`)
gathers a sharded block's parameters in hooks around it, which must run once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from prefalign import onednn
from prefalign.train.scorer import causal_lm_of, decoder_blocks


def recompute_blocks(model: nn.Module) -> None:
    """Checkpoint every decoder block of `model` (a causal LM, or a peft wrapper of one)."""
    lm = causal_lm_of(model)
    for block in decoder_blocks(model):
        _recompute(block, lm.config)
    lm.config.use_cache = False


def _recompute(block: nn.Module, config: Any) -> None:
    forward = block.forward

    def checkpointed(*args: Any, **kwargs: Any) -> Any:
        if not (block.training and torch.is_grad_enabled()):
            return forward(*args, **kwargs)
        seen = (config._attn_implementation, onednn.active())

        def contexts() -> tuple[Any, Any]:  # (around the forward, around the recomputation)
            return contextlib.nullcontext(), _as_in_forward(config, *seen)

        return checkpoint(forward, *args, use_reentrant=False, context_fn=contexts, **kwargs)

    block.forward = checkpointed


@contextlib.contextmanager
def _as_in_forward(config: Any, attention: str, onednn_active: bool) -> Iterator[None]:
    previous = config._attn_implementation
    config._attn_implementation = attention
    try:
        with onednn.cpu_matmul("onednn") if onednn_active else contextlib.nullcontext():
            yield
    finally:
        config._attn_implementation = previous
