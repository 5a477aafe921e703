"""`train.logps_keep_mib`: the training forward keeps the vocabulary projection's softmax for
backward instead of recomputing those logits (tests/engine/test_logps.py checks the
function itself). Backward rebuilds the softmax to the bit when it recomputes, so whole runs with
and without kept softmax end the same, exactly."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from prefalign.engine.logger import read_metrics
from prefalign.trainers.dpo.train import train
from run_helpers import tiny_config
from tiny_models import tiny_model_dir


@pytest.mark.parametrize("autocast", ["off", "bfloat16"])
def test_a_run_keeping_softmax_equals_one_recomputing_it(tmp_path, tiny_tokenizer, autocast):
    """Packed scorer, the default float32 route (bfloat16 autocast too), held-out evaluation:
    the same losses, held-out metrics and final weights."""
    model_dir = tiny_model_dir(tmp_path, tiny_tokenizer)
    results = [train(tiny_config(tmp_path, model_dir, run={"name": f"keep-{keep}"},
                                 train={"max_steps": 3, "eval_every": 3, "threads": 1,
                                        "autocast": autocast, "logps_keep_mib": keep}))
               for keep in (0, 256)]
    recomputed, kept = ([{k: v for k, v in line.items() if k != "time"}  # wall clock
                         for line in read_metrics(result.run_dir)] for result in results)
    assert kept == recomputed and any(line["split"] == "eval" for line in kept)
    weights = [load_file(str(result.run_dir / "final" / "model.safetensors"))
               for result in results]
    assert all(weights[0][name].equal(weights[1][name]) for name in weights[0])
