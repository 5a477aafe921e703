"""A tied input embedding whose gradient rows are added in place to the output projection's.

With tied weights autograd receives two gradients for W (V, H): the projection's dense one,
which its backward computes first, and the embedding's. Given as sparse rows
(`train.sparse_embedding_grad`), autograd adds them out of place: a fresh copy of the dense
(V × H) gradient every backward (113 MiB for SmolLM2; docs/performance.md, "Tied-embedding
gradient"). The packed scorer instead looks the embeddings up itself
(`tied_embeddings`): the projection's backward leaves its gradient in a `GradHandoff`,
and the lookup's backward, which autograd runs after it (the lookup feeds everything else), adds
the batch's token rows to it in place and returns the sum as W's one dense gradient. `.grad`,
hooks, DDP and gradient accumulation see an ordinary gradient.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prefalign.engine.forward.chunked import GradHandoff
from prefalign.engine.forward.model_parts import causal_lm_of


def tied_embedding(model: nn.Module, weight: Tensor) -> nn.Embedding | None:
    """The model's input embedding when its gradient can be handed off: a plain `nn.Embedding`
    whose weight is `weight` (the output projection's), trains, and had
    `sparse_tied_embedding_grad` applied (the switch), with no hooks, max_norm or frequency
    scaling that a lookup of its own would skip; None otherwise or under no_grad."""
    embedding = causal_lm_of(model).get_input_embeddings()
    eligible = (
        torch.is_grad_enabled()
        and type(embedding) is nn.Embedding
        and embedding.sparse
        and embedding.weight is weight
        and weight.requires_grad
        and embedding.max_norm is None
        and not embedding.scale_grad_by_freq
        and not (embedding._forward_hooks or embedding._forward_pre_hooks)
    )
    return embedding if eligible else None


def tied_embeddings(input_ids: Tensor, embedding: nn.Embedding,
                    handoff: GradHandoff) -> Tensor:
    """embedding(input_ids), (..., H); backward returns W's whole gradient: what `handoff`
    holds by then (the projection's part) plus these rows."""
    return _TiedLookup.apply(input_ids, embedding.weight, handoff, embedding.padding_idx)


class _TiedLookup(torch.autograd.Function):
    """E[ids] forward; backward: G + Σ_n onehot(ids_n) ⊗ grad_n, with G the handed-off gradient
    (zeros if none) and the rows of `padding_idx` left out, as `nn.Embedding` leaves them."""

    @staticmethod
    def forward(ctx: Any, input_ids: Tensor, weight: Tensor, handoff: GradHandoff,
                padding_idx: int | None) -> Tensor:
        ctx.save_for_backward(input_ids)
        ctx.handoff, ctx.padding_idx = handoff, padding_idx
        ctx.weight_shape, ctx.weight_dtype = weight.shape, weight.dtype
        return F.embedding(input_ids, weight, padding_idx)  # (..., H)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        (input_ids,) = ctx.saved_tensors
        grad_weight = ctx.handoff.take()  # (V, H) the projection's, if it had rows
        if grad_weight is None:
            grad_weight = grad_output.new_zeros(ctx.weight_shape, dtype=ctx.weight_dtype)
        ids = input_ids.reshape(-1)  # (N,)
        rows = grad_output.reshape(ids.shape[0], -1).to(grad_weight.dtype)  # (N, H)
        if ctx.padding_idx is not None:
            rows = rows.masked_fill((ids == ctx.padding_idx)[:, None], 0)
        grad_weight.index_add_(0, ids, rows)
        return None, grad_weight, None, None
