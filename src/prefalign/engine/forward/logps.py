"""Per-sequence log-probs of response tokens, from logits or (chunked) from hidden states.

Causal shift: the logits (or hidden state) at position t predict the token at t + 1, so
position t is scored against labels[:, t + 1]. Labels equal to `ignore_index` (-100: prompt
and padding) are excluded, and so is labels[:, 0], which nothing predicts.
"""

from __future__ import annotations

import torch
from torch import Tensor

from prefalign.engine.forward.chunked import IDENTITY, LogitTransform, chunked_token_logps
from prefalign.losses import SequenceLogps

IGNORE_INDEX = -100


def sequence_logps(
    logits: Tensor, labels: Tensor, *, ignore_index: int = IGNORE_INDEX
) -> SequenceLogps:
    """Sum, mean and count of log π(y_t | x, y_<t) over response tokens.

    logits (B, T, V) of any float dtype (log-softmax runs in float32 or wider); labels (B, T) int with
    `ignore_index` at prompt and padding positions. Returns `SequenceLogps` with (B,) tensors.
    This plain path materialises (B, T, V) float32 log-probs; see `sequence_logps_from_hidden`.
    """
    _check_labels(labels, logits.shape[:2], "logits")
    targets, mask = _shifted_targets(labels, ignore_index)  # (B, T-1) each
    compute_dtype = torch.promote_types(logits.dtype, torch.float32)  # float32 at least
    log_probs = torch.log_softmax(logits[:, :-1].to(compute_dtype), dim=-1)  # (B, T-1, V)
    token_logps = log_probs.gather(2, targets[..., None]).squeeze(2)  # (B, T-1)
    return _reduce(token_logps * mask, mask)


def sequence_logps_from_hidden(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    chunk_size: int = 1024,
    keep_mib: float = 0,
    ignore_index: int = IGNORE_INDEX,
    transform: LogitTransform = IDENTITY,
) -> SequenceLogps:
    """`sequence_logps(hidden @ weight.T, labels)` without ever holding the full logits.

    hidden (B, T, H) final hidden states (after the last norm); weight (V, H) the output
    projection (no bias); labels (B, T) as in `sequence_logps`. Only response positions are
    projected, `chunk_size` rows at a time, in forward and again in backward (recomputed), so
    peak extra memory is about one (chunk_size × V) float32 block plus a (V, H) float32 gradient.
    keep_mib: MiB of float32 softmax the forward may keep so that backward does not recompute
    those chunks' logits (0: recompute all; kept only when grad is enabled).
    transform: what the model does to its logits after the projection (`LogitTransform`).
    Values and gradients match the plain path to float32 rounding.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    _check_labels(labels, hidden.shape[:2], "hidden")
    if weight.ndim != 2 or weight.shape[1] != hidden.shape[2]:
        raise ValueError(
            f"weight must have shape (V, {hidden.shape[2]}) to match hidden, got {tuple(weight.shape)}"
        )
    targets, mask = _shifted_targets(labels, ignore_index)  # (B, T-1) each
    rows = hidden[:, :-1][mask]  # (N, H): only the positions that score a response token
    token_logps = chunked_token_logps(rows, weight, targets[mask], chunk_size, keep_mib,
                                      transform=transform)  # (N,)
    batch_index = mask.nonzero()[:, 0]  # (N,) which sequence each row belongs to
    sums = token_logps.new_zeros(labels.shape[0]).index_add(0, batch_index, token_logps)  # (B,)
    counts = mask.sum(dim=1)  # (B,)
    return SequenceLogps(sum=sums, mean=sums / counts.clamp(min=1), count=counts)


def _check_labels(labels: Tensor, leading_shape: torch.Size, source: str) -> None:
    if labels.ndim != 2 or labels.shape != leading_shape:
        raise ValueError(
            f"labels must have shape (B, T) = {tuple(leading_shape)} to match {source}, "
            f"got {tuple(labels.shape)}"
        )


def _shifted_targets(labels: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Targets for positions 0..T-2 (labels shifted left) and their response mask, (B, T-1)."""
    shifted = labels[:, 1:]  # (B, T-1)
    mask = shifted != ignore_index
    return shifted.masked_fill(~mask, 0), mask


def _reduce(token_logps: Tensor, mask: Tensor) -> SequenceLogps:
    sums = token_logps.sum(dim=1)  # (B,)
    counts = mask.sum(dim=1)  # (B,)
    return SequenceLogps(sum=sums, mean=sums / counts.clamp(min=1), count=counts)
