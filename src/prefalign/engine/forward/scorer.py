"""Sequence log-probs of chosen and rejected responses in one concatenated forward pass.

`PairScorer` wraps a causal LM so that `accelerate.prepare` (DDP) wraps the whole scoring step:
gradients then flow and synchronise through the wrapper's forward. It runs the decoder body once
on the (2B, T) stack of chosen and rejected sequences and projects only response positions to
the vocabulary, in chunks (`sequence_logps_from_hidden`): no (2B, T, V) float32 logits. What
the model's own forward does to its logits after the projection is repeated there
(`model_features.logit_transform`); attention and everything else is the model's own.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from prefalign.engine.forward.logps import sequence_logps_from_hidden
from prefalign.engine.forward.model_features import check_positions, logit_transform
from prefalign.engine.forward.model_parts import (
    causal_lm_of,
    decoder_blocks,
    decoder_of,
    output_weight,
)
from prefalign.losses import PairLogps

__all__ = ["PairScorer", "causal_lm_of", "decoder_blocks", "decoder_of", "output_weight",
           "sparse_tied_embedding_grad"]  # the model-part helpers stay importable from here


class PairScorer(nn.Module):
    """forward(batch) -> PairLogps (sums and token counts) for a `collate_pairs` batch."""

    def __init__(self, model: nn.Module, chunk_size: int = 1024, keep_mib: float = 0):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size
        self.keep_mib = keep_mib  # see sequence_logps_from_hidden

    def forward(
        self,
        chosen_input_ids: Tensor,
        chosen_attention_mask: Tensor,
        chosen_labels: Tensor,
        rejected_input_ids: Tensor,
        rejected_attention_mask: Tensor,
        rejected_labels: Tensor,
    ) -> PairLogps:
        batch = chosen_input_ids.shape[0]
        input_ids = torch.cat([chosen_input_ids, rejected_input_ids])  # (2B, T)
        attention_mask = torch.cat([chosen_attention_mask, rejected_attention_mask])  # (2B, T)
        labels = torch.cat([chosen_labels, rejected_labels])  # (2B, T)
        check_positions(self.model, longest=input_ids.shape[1])  # positions run 0..T-1
        hidden = decoder_of(self.model)(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state  # (2B, T, H)
        weight = output_weight(self.model)  # (V, H)
        logps = sequence_logps_from_hidden(hidden, weight, labels, chunk_size=self.chunk_size,
                                           keep_mib=self.keep_mib,
                                           transform=logit_transform(self.model))
        return PairLogps(
            chosen=logps.sum[:batch].clone(),  # FSDP2 warns of views among a sharded
            rejected=logps.sum[batch:].clone(),  # module's outputs
            chosen_count=logps.count[:batch],
            rejected_count=logps.count[batch:],
        )


def sparse_tied_embedding_grad(model: nn.Module) -> bool:
    """Let a tied, trainable input embedding return its gradient as sparse rows; True if set.

    An input embedding's dense gradient is a zeroed (V, H) tensor with the batch's token rows
    added, which autograd then adds to the tied output projection's (V, H) gradient. As sparse
    rows, autograd adds just those rows to the projection's gradient (out of place: one copy,
    no zeroed tensor) before the parameter's `.grad` sees them, so `.grad` stays dense (AdamW,
    clipping and DDP see no difference). The packed scorer, seeing the flag, looks the
    embeddings up itself and adds the rows in place instead (`train.tied_embedding`). Untied
    embeddings keep dense gradients: a sparse `.grad` of its own would reach the optimiser.
    Call after `accelerate.prepare`: DDP reads the flag when it is built and would then expect
    a sparse gradient.
    """
    lm = causal_lm_of(model)
    embedding, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    if not (isinstance(embedding, nn.Embedding) and head is not None
            and head.weight is embedding.weight and embedding.weight.requires_grad):
        return False
    embedding.sparse = True
    return True
