"""DPO's splits are the shared preference-pair splits (`prefalign.engine.pair_splits`)."""

from prefalign.engine.pair_splits import (
    TokenizedSplit,
    length_balance,
    length_groups,
    length_sign,
    make_batch,
    model_inputs,
    prepare_splits,
    truncation_options,
)

__all__ = ["TokenizedSplit", "length_balance", "length_groups", "length_sign", "make_batch",
           "model_inputs", "prepare_splits", "truncation_options"]
