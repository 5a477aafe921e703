"""Token log-probs from hidden states and the output projection, a chunk of rows at a time.

Forward keeps the inputs and each row's max logit and Σ exp(logit − max); backward recomputes
each chunk's logits. Neither pass holds more than one (chunk × vocab) float32 block of logits,
except what `keep_mib` allows: forward may keep the float32 softmax of its first chunks, up to
that many MiB, and backward then uses it instead of recomputing those logits (its largest
product). Inside `prefalign.engine.forward.onednn.cpu_matmul`, float32 CPU products run through oneDNN
(`_Products`).

Under autocast (`train.autocast`) the log-probs stay float32: the forward's logits, the
backward's recomputed logits and the softmax. The backward's two products from the logits'
gradient (to the rows and to the weight) run in autocast's dtype, as autocast runs every other
layer's backward products: the gradient g·(onehot − softmax) is rounded once to bfloat16 (2^-9
relative), the products accumulate in float32 and the weight's gradient is summed over chunks in
float32. On SmolLM2 on a 2-core AMD EPYC this cut the projection's backward from 559 to 440 ms a
step (bfloat16 products run 2-4x the float32 ones there, the weight gradient's most).

A `LogitTransform` applies what some models do to their logits after the projection (a scale,
Gemma's soft-capping cap·tanh(z/cap)) in both passes, so the log-probs are the model's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from prefalign.engine.forward import onednn


@dataclass(frozen=True)
class LogitTransform:
    """What a model does to its logits z after the output projection: z·scale (Cohere's
    `logit_scale`, Granite's 1/`logits_scaling`), then cap·tanh(z/cap) when `softcap` is set
    (Gemma's `final_logit_softcapping`). The identity by default."""

    scale: float = 1.0
    softcap: float | None = None

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.softcap is None

    def apply_(self, logits: Tensor, *, slope: bool = False) -> Tensor | float:
        """Transform `logits` (n, V) in place, in the model's order of operations; return the
        derivative of the result by the raw logits: (n, V) with soft-capping (a new tensor,
        only when `slope`), else the scalar scale."""
        if self.scale != 1.0:
            logits.mul_(self.scale)
        if self.softcap is None:
            return self.scale
        tanh = logits.div_(self.softcap).tanh_()  # (n, V)
        # d/dz cap·tanh(s·z/cap) = s·(1 − tanh²)
        derivative = tanh.square().neg_().add_(1).mul_(self.scale) if slope else 1.0
        tanh.mul_(self.softcap)
        return derivative


IDENTITY = LogitTransform()


def chunked_token_logps(rows: Tensor, weight: Tensor, targets: Tensor, chunk_size: int,
                        keep_mib: float = 0, handoff: GradHandoff | None = None,
                        transform: LogitTransform = IDENTITY) -> Tensor:
    """`ChunkedTokenLogps.apply`, keeping softmax (`keep_mib`) only where a backward can follow:
    under no_grad (evaluation, reference passes) nothing is kept."""
    keep = keep_mib if torch.is_grad_enabled() else 0
    return ChunkedTokenLogps.apply(rows, weight, targets, chunk_size, keep, handoff, transform)


class GradHandoff:
    """A weight's gradient passed from one backward to a later one of the same graph instead of
    through autograd: the later one adds its own part in place and returns the sum (a tied input
    embedding, whose backward runs after the output projection's: `train.tied_embedding`)."""

    def __init__(self) -> None:
        self.grad: Tensor | None = None

    def put(self, grad: Tensor) -> None:
        self.grad = grad if self.grad is None else self.grad.add_(grad)

    def take(self) -> Tensor | None:
        grad, self.grad = self.grad, None
        return grad


class ChunkedTokenLogps(torch.autograd.Function):
    """log softmax(f(h_n · Wᵀ))[y_n] for N rows h_n (N, H), weight W (V, H), targets y_n (N,),
    f the model's `transform` of its logits.

    keep_mib: MiB of softmax forward may keep for backward (0: recompute every chunk). Nothing
    is kept under soft-capping, whose backward needs the capped logits, not only their softmax.
    handoff: where backward puts W's gradient instead of returning it (None: returned).
    """

    @staticmethod
    def forward(ctx: Any, rows: Tensor, weight: Tensor, targets: Tensor, chunk_size: int,
                keep_mib: float = 0, handoff: GradHandoff | None = None,
                transform: LogitTransform = IDENTITY) -> Tensor:
        token_logps = rows.new_empty(rows.shape[0], dtype=_compute_dtype(rows))  # (N,)
        row_maxes = torch.empty_like(token_logps)  # (N,) max_v logit_v
        sums_exp = torch.empty_like(token_logps)  # (N,) Σ_v exp(logit_v − max)
        products = _Products(rows, weight, chunk_size)
        kept = _KeptSoftmax(keep_mib if transform.softcap is None else 0)
        for start in range(0, rows.shape[0], chunk_size):
            rows_chunk = rows[start : start + chunk_size]  # (n, H)
            targets_chunk = targets[start : start + chunk_size]  # (n,)
            logits = products.logits(rows_chunk)  # (n, V)
            transform.apply_(logits)
            target_logits = logits.gather(1, targets_chunk[:, None]).squeeze(1)  # (n,)
            # log-sum-exp in place: the logits end up holding exp(logits − max)
            row_max = logits.amax(dim=1, keepdim=True)  # (n, 1)
            sum_exp = logits.sub_(row_max).exp_().sum(dim=1)  # (n,)
            log_normaliser = row_max.squeeze(1) + sum_exp.log()  # (n,)
            row_maxes[start : start + chunk_size] = row_max.squeeze(1)
            sums_exp[start : start + chunk_size] = sum_exp
            token_logps[start : start + chunk_size] = target_logits - log_normaliser
            kept.offer(logits, sum_exp, fresh=products.onednn)
        ctx.save_for_backward(rows, weight, targets, row_maxes, sums_exp)
        ctx.chunk_size = chunk_size
        ctx.onednn = products.onednn
        ctx.backward_dtype = _autocast_dtype(rows)
        ctx.kept = kept
        ctx.handoff = handoff
        ctx.transform = transform
        return token_logps

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_token_logps: Tensor) -> tuple[Tensor | None, ...]:
        # d log p_n[y_n] / d logits_n = onehot(y_n) − softmax(logits_n)
        rows, weight, targets, row_maxes, sums_exp = ctx.saved_tensors
        chunk_size = ctx.chunk_size
        need_rows, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_rows = torch.empty_like(rows) if need_rows else None  # (N, H)
        compute_dtype = _compute_dtype(rows)
        products = _Products(rows, weight, chunk_size, ctx.onednn, ctx.backward_dtype)
        grad_weight = None  # (V, H), the first chunk's product, then accumulated
        grad_token_logps = grad_token_logps.to(compute_dtype)
        for index, start in enumerate(range(0, rows.shape[0], chunk_size)):
            stop = start + chunk_size
            rows_chunk = rows[start:stop]  # (n, H)
            grad_chunk = grad_token_logps[start:stop]  # (n,)
            logits = ctx.kept.take(index)  # (n, V) the softmax, if kept
            slope = ctx.transform.scale  # d f(z) / dz: a scalar, or (n, V) under soft-capping
            if logits is None:
                logits = products.logits(rows_chunk)  # (n, V)
                slope = ctx.transform.apply_(logits, slope=True)
                # the softmax as forward computed (and kept) it, to the bit
                logits.sub_(row_maxes[start:stop, None]).exp_().div_(sums_exp[start:stop, None])
            # g·(onehot − softmax), built in place over the softmax, then by the chain rule
            # through the transform
            grad_logits = logits.mul_(-grad_chunk[:, None])
            grad_logits.scatter_add_(1, targets[start:stop, None], grad_chunk[:, None])
            if isinstance(slope, Tensor) or slope != 1.0:
                grad_logits.mul_(slope)
            del slope
            grad_logits = products.backward_operand(grad_logits)
            del logits  # under autocast on oneDNN's path (fresh logits per chunk) this frees them
            if grad_rows is not None:
                grad_rows[start:stop] = products.grad_rows(grad_logits)  # (n, H)
            if need_weight:
                grad_weight = products.add_grad_weight(grad_weight, grad_logits, rows_chunk)
        if need_weight and grad_weight is None:
            # no rows: a dense zero rather than None, so a tied embedding's sparse rows are
            # added to a dense gradient (see train.scorer.sparse_tied_embedding_grad)
            grad_weight = torch.zeros_like(weight)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_weight is not None and ctx.handoff is not None:
            ctx.handoff.put(grad_weight)
            grad_weight = None
        return grad_rows, grad_weight, None, None, None, None, None


class _KeptSoftmax:
    """The float32 softmax of forward's first chunks, while they fit in `keep_mib`. Each is
    handed out once: a second backward (retain_graph) recomputes it, to the same bits."""

    def __init__(self, keep_mib: float) -> None:
        self.room = int(keep_mib * 2**20)
        self.chunks: list[Tensor | None] = []

    def offer(self, exp_logits: Tensor, sum_exp: Tensor, fresh: bool) -> None:
        """Keep exp(logits − max) / Σ exp when it fits (dividing in place when `fresh`, the
        chunk's own logits, else into a copy), and stop keeping at the first that does not."""
        size = exp_logits.numel() * exp_logits.element_size()
        if size > self.room:
            self.room = 0
            return
        self.room -= size
        scale = sum_exp[:, None]
        self.chunks.append(exp_logits.div_(scale) if fresh else exp_logits / scale)

    def take(self, index: int) -> Tensor | None:
        """Chunk `index`'s softmax (backward's to overwrite), or None."""
        if index >= len(self.chunks) or self.chunks[index] is None:
            return None
        softmax, self.chunks[index] = self.chunks[index], None
        return softmax


def _autocast_dtype(rows: Tensor) -> torch.dtype | None:
    """Autocast's dtype when float32 rows come in under autocast on their device, else None."""
    device = rows.device.type
    if rows.dtype == torch.float32 and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return None


def _compute_dtype(rows: Tensor) -> torch.dtype:
    """float32 for half-precision inputs (softmax needs the range), float64 stays float64."""
    return torch.promote_types(rows.dtype, torch.float32)


class _Products:
    """The products of one pass: logits and row gradients by oneDNN (float32 CPU inside
    `onednn.cpu_matmul`) or torch, weight gradients by torch. torch's path reuses one
    (chunk × V) logits buffer for every chunk. With `backward_dtype` (autocast's, set in
    backward only) both gradient products take the weight and the logits' gradient in that
    dtype, by torch."""

    def __init__(self, rows: Tensor, weight: Tensor, chunk_size: int,
                 use_onednn: bool | None = None,
                 backward_dtype: torch.dtype | None = None) -> None:
        self.weight = weight
        self.onednn = (onednn.active() and onednn.eligible(rows, weight)
                       if use_onednn is None else use_onednn)
        self.buffer = None if self.onednn else _logits_buffer(rows, weight, chunk_size)
        self.low_weight = None if backward_dtype is None else weight.to(backward_dtype)

    def backward_operand(self, grad_logits: Tensor) -> Tensor:
        """The logits' gradient as both gradient products take it: rounded to the backward
        dtype when there is one, else as is."""
        if self.low_weight is None:
            return grad_logits
        return grad_logits.to(self.low_weight.dtype)

    def logits(self, rows_chunk: Tensor) -> Tensor:
        """rows_chunk · Wᵀ in the compute dtype, (n, V)."""
        if self.onednn:
            return onednn.linear(rows_chunk, self.weight)
        return _chunk_logits(rows_chunk, self.weight, self.buffer)

    def grad_rows(self, grad_logits: Tensor) -> Tensor:
        """grad_logits · W, (n, H)."""
        if self.low_weight is not None:
            return grad_logits @ self.low_weight
        if self.onednn:
            return onednn.linear(grad_logits, self.weight.t())
        return grad_logits.to(self.weight.dtype) @ self.weight

    @staticmethod
    def add_grad_weight(grad_weight: Tensor | None, grad_logits: Tensor,
                        rows_chunk: Tensor) -> Tensor:
        """grad_weight + grad_logitsᵀ · rows_chunk, (V, H), in place; the product alone for the
        first chunk (grad_weight None); the sum in float32 or wider whatever the product's dtype.
        Always torch's product: oneDNN would either copy the (V × n) transposed logits or
        return a transposed (V × H) gradient, and with tied embeddings that gradient is summed
        with the embedding's; measured on SmolLM2, either costs more than oneDNN's faster
        product saves."""
        rows_chunk = rows_chunk.to(grad_logits.dtype)
        if grad_weight is None:
            product = grad_logits.t() @ rows_chunk
            return product.to(_compute_dtype(product))
        if grad_weight.dtype == grad_logits.dtype:
            return grad_weight.addmm_(grad_logits.t(), rows_chunk)
        return grad_weight.add_(grad_logits.t() @ rows_chunk)


def _logits_buffer(rows: Tensor, weight: Tensor, chunk_size: int) -> Tensor:
    """One reusable (chunk × V) block: allocating it once per pass avoids fresh pages per chunk."""
    rows_per_chunk = min(chunk_size, rows.shape[0])
    shape = (rows_per_chunk, weight.shape[0])
    return torch.empty(shape, dtype=_compute_dtype(rows), device=rows.device)


def _chunk_logits(rows_chunk: Tensor, weight: Tensor, buffer: Tensor) -> Tensor:
    """rows_chunk · Wᵀ in the compute dtype, in the first rows of `buffer`, shape (n, V)."""
    out = buffer[: rows_chunk.shape[0]]
    if rows_chunk.dtype == out.dtype and weight.dtype == out.dtype:
        return torch.mm(rows_chunk, weight.t(), out=out)
    # half-precision inputs: matmul in their dtype (as the model would), softmax in float32
    return out.copy_(rows_chunk @ weight.t())
