"""`train.cpu_matmul`: whole runs with float32 products through oneDNN equal runs through torch's
own BLAS. Tolerances as in test_invariants.py: float32 sums in another order differ by ~1e-7
relative; lr 1e-4 keeps their effect on the weights below 1e-6.
"""

from __future__ import annotations

import pytest
import torch

import prefalign.trainers.dpo.train as loop
from prefalign.engine.forward import onednn
from prefalign.engine.forward.packed import score_tokenized_pairs
from prefalign.engine.manifest import read_manifest
from random_pairs import random_pairs
from run_helpers import SMALL_LR, final_weights, logged_losses, max_weight_difference, tiny_config
from tiny_models import tiny_llama, tiny_model_dir

pytestmark = pytest.mark.skipif(not onednn.available(), reason="this torch has no oneDNN")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer)


def test_packed_scores_and_gradients_equal_torch(tiny_tokenizer):
    """Every linear layer and the chunked head routed: summed log-probs within 1e-5 relative,
    gradients within 1e-5 of the largest."""
    model = tiny_llama(tiny_tokenizer, seed=4).train()
    pairs = random_pairs(len(tiny_tokenizer), [(40, 20, 30), (10, 25, 5), (60, 8, 12)], seed=5)
    results = []
    for backend in ("onednn", "torch"):
        model.zero_grad(set_to_none=True)
        with onednn.cpu_matmul(backend):
            logps = score_tokenized_pairs(model, pairs)
            (logps.chosen.sum() - logps.rejected.sum()).backward()
        results.append((logps, torch.cat([p.grad.flatten() for p in model.parameters()])))
    (ours, our_grads), (theirs, their_grads) = results
    torch.testing.assert_close(ours.chosen, theirs.chosen, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.rejected, theirs.rejected, rtol=1e-5, atol=1e-5)
    assert (our_grads - their_grads).abs().max() < 1e-5 * their_grads.abs().max()


@pytest.mark.parametrize("sections", [
    {},
    {"lora": {"enabled": True, "r": 4, "alpha": 8}, "reference": {"strategy": "adapter_off"}},
], ids=["full", "lora"])
def test_a_onednn_run_equals_a_torch_run(tmp_path, model_dir, sections):
    results = {}
    for backend in ("onednn", "torch"):
        config = tiny_config(tmp_path, model_dir, run={"name": backend}, optim=SMALL_LR,
                             train={"max_steps": 3, "cpu_matmul": backend}, **sections)
        results[backend] = loop.train(config)
    routed, plain = results["onednn"].run_dir, results["torch"].run_dir
    assert read_manifest(routed)["config"]["train"]["cpu_matmul"] == "onednn"
    assert logged_losses(routed) == pytest.approx(logged_losses(plain), rel=1e-5)
    assert len(logged_losses(routed)) == 3
    assert max_weight_difference(final_weights(routed), final_weights(plain)) < 1e-6
