"""`train.autocast: bfloat16`: bfloat16 matmuls in the policy's decoder, float32 everywhere else.

Tolerances: bfloat16 keeps 8 significant bits (relative rounding 2^-9 ≈ 2e-3 per value). On the
tiny Llama the summed log-probs move by well under 2% relative and the gradients keep a cosine
similarity above 0.99 with float32's; each test also checks that the difference is not zero
(autocast really ran).
"""

from __future__ import annotations

import math

import pytest
import torch

import prefalign.trainers.dpo.train as loop
from prefalign.config import ConfigError, TrainSection
from prefalign.engine.forward.packed import score_tokenized_pairs
from prefalign.engine.forward.precision import policy_precision
from prefalign.engine.logger import read_metrics
from prefalign.engine.manifest import read_manifest
from random_pairs import random_pairs
from run_helpers import tiny_config
from tiny_models import tiny_llama, tiny_model_dir

AUTOCAST = TrainSection(autocast="bfloat16")
CPU = torch.device("cpu")
SHAPES = [(40, 20, 30), (10, 25, 5), (60, 8, 12), (5, 30, 30)]


def _scores_and_grads(model, pairs, train: TrainSection):
    model.zero_grad(set_to_none=True)
    with policy_precision(train, CPU):
        logps = score_tokenized_pairs(model, pairs)
    (logps.chosen.sum() - logps.rejected.sum()).backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    return logps, grads


def test_autocast_runs_the_decoder_in_bfloat16_and_keeps_the_rest_float32(tiny_tokenizer):
    model = tiny_llama(tiny_tokenizer, seed=1).train()
    seen: list[torch.dtype] = []
    hook = model.model.layers[0].mlp.down_proj.register_forward_hook(
        lambda module, args, output: seen.append(output.dtype))
    pairs = random_pairs(len(tiny_tokenizer), SHAPES)
    plain, plain_grads = _scores_and_grads(model, pairs, TrainSection())
    mixed, mixed_grads = _scores_and_grads(model, pairs, AUTOCAST)
    hook.remove()
    assert seen == [torch.float32, torch.bfloat16]  # the decoder's matmuls, plain then autocast
    assert mixed.chosen.dtype == torch.float32  # the head and log-softmax stay float32
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32
               for p in model.parameters())
    for ours, theirs in ((mixed.chosen, plain.chosen), (mixed.rejected, plain.rejected)):
        torch.testing.assert_close(ours, theirs, rtol=2e-2, atol=0.0)
        assert not torch.equal(ours, theirs)
    cosine = torch.nn.functional.cosine_similarity(mixed_grads, plain_grads, dim=0)
    assert cosine > 0.99
    assert not torch.equal(mixed_grads, plain_grads)


def test_autocast_off_is_the_plain_path_exactly(tiny_tokenizer):
    model = tiny_llama(tiny_tokenizer, seed=2)
    pairs = random_pairs(len(tiny_tokenizer), SHAPES, seed=3)
    first, first_grads = _scores_and_grads(model, pairs, TrainSection())
    again, again_grads = _scores_and_grads(model, pairs, TrainSection(autocast="off"))
    assert torch.equal(first.chosen, again.chosen) and torch.equal(first_grads, again_grads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer)


def _train_losses(run_dir):
    return [line for line in read_metrics(run_dir) if line["split"] == "train"]


def test_an_autocast_run_trains_against_the_float32_reference(tmp_path, model_dir):
    """Same data and reference cache: the autocast run reuses the float32 run's reference
    log-probs, starts from the same loss to bfloat16 rounding, and its loss falls."""
    sections = dict(reference={"strategy": "precomputed", "cache": str(tmp_path / "ref.pt")},
                    train={"max_steps": 6, "batch_size": 4, "threads": 1})
    plain = loop.train(tiny_config(tmp_path, model_dir, run={"name": "plain"}, **sections))
    sections["train"] = {**sections["train"], "autocast": "bfloat16"}
    mixed = loop.train(tiny_config(tmp_path, model_dir, run={"name": "mixed"}, **sections))
    manifest = read_manifest(mixed.run_dir)
    assert manifest["config"]["train"]["autocast"] == "bfloat16"
    assert all(split["reused"] for split in manifest["reference"]["splits"].values())
    plain_logs, mixed_logs = _train_losses(plain.run_dir), _train_losses(mixed.run_dir)
    # reference log-probs = policy log-probs - change: identical float32 tables in both runs
    for a, b in zip(plain_logs, mixed_logs, strict=True):
        for side in ("chosen", "rejected"):
            reference_a = a[f"logps/{side}"] - a[f"logps/{side}_change"]
            reference_b = b[f"logps/{side}"] - b[f"logps/{side}_change"]
            assert reference_a == pytest.approx(reference_b, rel=1e-6)
    assert mixed_logs[0]["loss"] == pytest.approx(plain_logs[0]["loss"], rel=1e-2)
    assert mixed_logs[0]["loss"] != plain_logs[0]["loss"] or \
        mixed_logs[0]["logps/chosen"] != plain_logs[0]["logps/chosen"]
    assert mixed_logs[-1]["loss"] < mixed_logs[0]["loss"] - 0.05


def test_autocast_needs_float32_master_weights(tmp_path, model_dir):
    with pytest.raises(ConfigError, match="train.autocast.*model.dtype: float32"):
        tiny_config(tmp_path, model_dir, model={"dtype": "bfloat16"},
                    train={"autocast": "bfloat16"})


def test_a_policy_precision_reference_starts_the_run_at_ln2(tmp_path, tiny_tokenizer):
    """`reference.precision: policy`: the precomputed pass runs under the policy's autocast, so
    the first step's policy and reference log-probs agree and its DPO loss is ln 2, as in a float32
    run; the float32 reference (the default) leaves bfloat16's rounding in it. Weights drawn 10x
    wider than usual, so that rounding moves the loss well beyond float32's."""
    model_dir = tiny_model_dir(tmp_path / "wide", tiny_tokenizer, initializer_range=0.2)
    first_losses = {}
    for precision in ("policy", "full"):
        config = tiny_config(tmp_path, model_dir, run={"name": precision},
                             reference={"strategy": "precomputed", "precision": precision},
                             train={"max_steps": 1, "batch_size": 4, "threads": 1,
                                    "autocast": "bfloat16"})
        result = loop.train(config)
        first_losses[precision] = _train_losses(result.run_dir)[0]
        assert read_manifest(result.run_dir)["reference"]["autocast"] == \
            ("bfloat16" if precision == "policy" else "off")
    assert first_losses["policy"]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first_losses["policy"]["logps/chosen_change"] == pytest.approx(0.0, abs=1e-4)
    assert abs(first_losses["full"]["loss"] - math.log(2)) > 1e-4
