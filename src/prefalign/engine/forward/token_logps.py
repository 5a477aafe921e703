"""Per-token log-probs of the labelled tokens of right-padded sequences, for losses that weigh
each token on its own (the policy-gradient losses of `prefalign grpo`).

`TokenLogpScorer` runs the decoder once over the (B, T) batch and projects only labelled
positions to the vocabulary, in chunks, as the sequence scorers do (`chunked_token_logps`);
it returns the labelled tokens' log-probs laid out row by row from column 0, (B, C) with C the
most labelled tokens of any row, and the mask of real entries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from prefalign.engine.forward.chunked import chunked_token_logps
from prefalign.engine.forward.logps import IGNORE_INDEX
from prefalign.engine.forward.model_features import check_positions, logit_transform
from prefalign.engine.forward.model_parts import decoder_of, output_weight


@dataclass(frozen=True)
class TokenLogps:
    """logps (B, C) float: log π(y_t | y_<t) of each row's labelled tokens, in order, zero past
    the row's end; mask (B, C) float: 1 on real entries."""

    logps: Tensor
    mask: Tensor


class TokenLogpScorer(nn.Module):
    """forward(input_ids, attention_mask, labels) -> TokenLogps; labels are IGNORE_INDEX on
    the prompt and padding, the token id on every scored (completion) position."""

    def __init__(self, model: nn.Module, chunk_size: int = 1024, keep_mib: float = 0):
        super().__init__()
        self.model, self.chunk_size, self.keep_mib = model, chunk_size, keep_mib

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> TokenLogps:
        check_positions(self.model, longest=input_ids.shape[1])
        hidden = decoder_of(self.model)(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state  # (B, T, H)
        shifted = labels[:, 1:]  # (B, T-1): position t predicts token t + 1
        scored = shifted != IGNORE_INDEX  # (B, T-1)
        rows = hidden[:, :-1][scored]  # (N, H)
        values = chunked_token_logps(rows, output_weight(self.model), shifted[scored],
                                     self.chunk_size, self.keep_mib,
                                     transform=logit_transform(self.model))  # (N,)
        counts = scored.sum(dim=1)  # (B,)
        width = max(int(counts.max()), 1) if counts.numel() else 1
        row = scored.nonzero()[:, 0]  # (N,)
        column = (torch.cumsum(scored, dim=1) - 1)[scored]  # (N,) place within its row
        logps = values.new_zeros(labels.shape[0], width).index_put((row, column), values)
        mask = (torch.arange(width, device=labels.device)[None] < counts[:, None])
        return TokenLogps(logps, mask.to(values.dtype))  # (B, C) each
