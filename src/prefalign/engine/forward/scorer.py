"""Sequence log-probs of chosen and rejected responses in one concatenated forward pass.

`PairScorer` wraps a causal LM so that `accelerate.prepare` (DDP) wraps the whole scoring step:
gradients then flow and synchronise through the wrapper's forward. It runs the decoder body once
on the (2B, T) stack of chosen and rejected sequences and projects only response positions to
the vocabulary, in chunks (`sequence_logps_from_hidden`): no (2B, T, V) float32 logits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from prefalign.engine.forward.logps import sequence_logps_from_hidden
from prefalign.losses import PairLogps


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
        hidden = decoder_of(self.model)(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state  # (2B, T, H)
        weight = output_weight(self.model)  # (V, H)
        logps = sequence_logps_from_hidden(hidden, weight, labels, chunk_size=self.chunk_size,
                                           keep_mib=self.keep_mib)
        return PairLogps(
            chosen=logps.sum[:batch].clone(),  # FSDP2 warns of views among a sharded
            rejected=logps.sum[batch:].clone(),  # module's outputs
            chosen_count=logps.count[:batch],
            rejected_count=logps.count[batch:],
        )


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
