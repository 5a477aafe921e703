"""Activation checkpointing of the decoder blocks (`model.gradient_checkpointing`).

Each decoder block's `forward` runs under torch's non-reentrant checkpoint while training, in one
of two modes:
- `blocks` (`gradient_checkpointing: true`): the block keeps only its input; backward runs its
  whole forward again, matrix products included (about a third more compute per step);
- `pointwise` (`gradient_checkpointing: pointwise`, torch's selective checkpointing): the block
  keeps the outputs of its matrix products and attention and recomputes only the elementwise
  operations between them (norms, rotary embeddings, the MLP's activation and gate product, the
  transposes and copies): the tensors that make up most of a block's activations but cost little
  to compute again. Its backward must run outside autocast, as prefalign's step runs it (torch's
  replay then finds operations the forward did not run). It saves less memory than `blocks`
  for much less extra time (docs/performance.md, "Gradient checkpointing").

prefalign wraps the blocks itself instead of calling transformers' `gradient_checkpointing_enable`
because the recomputation must run what the forward pass ran, and two of prefalign's settings
hold only while the forward pass runs: the packed scorer's per-pair block attention
(`packed_attention.packed_attention`) and the oneDNN route of float32 products
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
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)

from prefalign.engine.forward import onednn
from prefalign.engine.forward.model_parts import causal_lm_of, decoder_blocks

RecomputeMode = Literal["blocks", "pointwise"]


def recompute_blocks(model: nn.Module, mode: RecomputeMode = "blocks") -> None:
    """Checkpoint every decoder block of `model` (a causal LM, or a peft wrapper of one) in
    `mode` (module docstring)."""
    if mode not in ("blocks", "pointwise"):
        raise ValueError(f"recompute mode must be 'blocks' or 'pointwise', got {mode!r}")
    lm = causal_lm_of(model)
    for block in decoder_blocks(model):
        _recompute(block, lm.config, mode)
    lm.config.use_cache = False


def _recompute(block: nn.Module, config: Any, mode: RecomputeMode) -> None:
    forward = block.forward

    def checkpointed(*args: Any, **kwargs: Any) -> Any:
        if not (block.training and torch.is_grad_enabled()):
            return forward(*args, **kwargs)
        seen = (config._attn_implementation, onednn.active())

        def contexts() -> tuple[Any, Any]:  # (around the forward, around the recomputation)
            replay = _as_in_forward(config, *seen)
            if mode == "blocks":
                return contextlib.nullcontext(), replay
            keep, recompute = create_selective_checkpoint_contexts(_keep_products)
            return keep, _together(replay, recompute)

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


def _product_ops() -> frozenset[Any]:
    """The operators whose outputs `pointwise` keeps: matrix products (torch's, and the oneDNN
    route's) and attention kernels; those this torch build lacks are left out."""
    names = [("aten", "mm"), ("aten", "addmm"), ("aten", "bmm"), ("aten", "baddbmm"),
             ("mkldnn", "_linear_pointwise"),
             ("aten", "_scaled_dot_product_flash_attention_for_cpu"),
             ("aten", "_scaled_dot_product_flash_attention"),
             ("aten", "_scaled_dot_product_efficient_attention"),
             ("aten", "_scaled_dot_product_cudnn_attention")]
    ops = []
    for namespace, name in names:
        try:
            ops.append(getattr(getattr(torch.ops, namespace), name).default)
        except (AttributeError, RuntimeError):
            continue
    return frozenset(ops)


PRODUCTS = _product_ops()


def _keep_products(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    """Selective checkpointing's policy: keep products and attention, and autocast's copies of
    the weights (a product's backward keeps them anyway; casting them again is the slow part of
    recomputing a bfloat16 block); recompute the rest."""
    if op in PRODUCTS or (op is torch.ops.aten._to_copy.default
                          and isinstance(args[0], nn.Parameter)):
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


@contextlib.contextmanager
def _together(*managers: contextlib.AbstractContextManager) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for manager in managers:
            stack.enter_context(manager)
        yield
