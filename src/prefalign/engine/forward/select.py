"""Pick the pair scorer a config asks for: packed (prompt once, no padding) or padded (plain)."""

from __future__ import annotations

from torch import nn

from prefalign.config import TrainSection
from prefalign.engine.forward.packed import PackedPairScorer
from prefalign.engine.forward.scorer import PairScorer


def build_scorer(model: nn.Module, train: TrainSection) -> nn.Module:
    """`train.scorer`: "packed" -> PackedPairScorer, "padded" -> PairScorer; same results
    (tested equal within 1e-4 in float32, gradients too); packed skips the repeated prompt and
    the padding (docs/performance.md)."""
    if train.scorer == "packed":
        return PackedPairScorer(model, train.logps_chunk_size,
                                attention_blocks=train.attention_blocks,
                                keep_mib=train.logps_keep_mib)
    return PairScorer(model, train.logps_chunk_size, keep_mib=train.logps_keep_mib)
