"""Invariants of whole training runs on a tiny Llama: how the batch is split, interruptions and
the reference strategy must not change what is learned.

Tolerances: float32 sums in a different order (other padded shapes, other batch splits) differ
by ~1e-7 relative. AdamW divides each gradient element by sqrt(v) + eps, so for elements whose
gradient is nearly 0 (embedding rows of tokens seen once) that noise can move the update by a
sizeable fraction of lr; lr 1e-4 keeps such differences in the weights below 1e-6.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import prefalign.trainers.loop.loop as loop
from prefalign.engine.manifest import read_manifest
from prefalign.trainers.dpo.train import train
from run_helpers import (
    SMALL_LR,
    final_weights,
    logged_losses,
    max_weight_difference,
    tiny_config,
)
from tiny_models import tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer)


def test_batch_8_equals_batch_2_with_4_accumulation_steps(tmp_path, model_dir):
    whole = train(tiny_config(tmp_path, model_dir, run={"name": "whole"}, optim=SMALL_LR,
                                   train={"batch_size": 8, "grad_accum": 1, "max_steps": 3}))
    split = train(tiny_config(tmp_path, model_dir, run={"name": "split"}, optim=SMALL_LR,
                                   train={"batch_size": 2, "grad_accum": 4, "max_steps": 3}))
    assert logged_losses(whole.run_dir) == pytest.approx(logged_losses(split.run_dir), abs=1e-6)
    assert len(logged_losses(whole.run_dir)) == 3
    assert whole.final_eval["loss"] == pytest.approx(split.final_eval["loss"], abs=1e-6)
    assert max_weight_difference(final_weights(whole.run_dir), final_weights(split.run_dir)) < 1e-6


LORA = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.1}


@pytest.mark.parametrize("lora", [{}, LORA], ids=["full", "lora"])
def test_an_interrupted_run_resumed_ends_where_an_uninterrupted_one_does(
    tmp_path, tiny_tokenizer, monkeypatch, lora
):
    """Warm-up and linear decay (scheduler state), dropout (RNG state) and a step past the
    first epoch (data position): a crash at step 5 resumes from the step-4 checkpoint. With
    LoRA the checkpoint holds the adapter only and the reference is the adapter switched off."""
    model_dir = tiny_model_dir(tmp_path, tiny_tokenizer, attention_dropout=0.1)
    sections = dict(optim={"lr": 1e-3, "warmup_steps": 2, "schedule": "linear"},
                    train={"batch_size": 4, "grad_accum": 2, "max_steps": 6, "save_every": 2,
                           "eval_every": 3}, lora=lora)
    if lora:
        sections["reference"] = {"strategy": "adapter_off"}
    straight = train(tiny_config(tmp_path, model_dir, run={"name": "straight"}, **sections))
    config = tiny_config(tmp_path, model_dir, run={"name": "crashed"}, **sections)
    real_step = loop._one_step

    def crash_at_step_5(run, position, progress):
        if position.global_step == 4:
            raise RuntimeError("simulated crash")
        return real_step(run, position, progress)

    monkeypatch.setattr(loop, "_one_step", crash_at_step_5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config)
    assert read_manifest(config_run_dir(config))["outcome"].startswith("failed: RuntimeError")
    monkeypatch.setattr(loop, "_one_step", real_step)
    resumed = train(config, resume=True)
    assert resumed.outcome == "completed" and resumed.steps == 6
    assert logged_losses(resumed.run_dir) == logged_losses(straight.run_dir)  # each step logged once
    assert logged_losses(resumed.run_dir, "eval") == logged_losses(straight.run_dir, "eval")
    assert max_weight_difference(final_weights(straight.run_dir), final_weights(resumed.run_dir)) < 1e-6
    manifest = read_manifest(resumed.run_dir)
    assert [r["from_step"] for r in manifest["resumes"]] == [4]


def config_run_dir(config):
    return loop.Path(config.run.output_dir) / config.run.name


def test_precomputed_reference_trains_like_the_frozen_copy(tmp_path, model_dir):
    sections = dict(optim=SMALL_LR, train={"batch_size": 4, "max_steps": 3, "eval_every": 3})
    frozen = train(tiny_config(tmp_path, model_dir, run={"name": "frozen"}, **sections))
    precomputed = train(tiny_config(tmp_path, model_dir, run={"name": "precomputed"},
                                         reference={"strategy": "precomputed"}, **sections))
    assert logged_losses(frozen.run_dir) == pytest.approx(logged_losses(precomputed.run_dir), abs=1e-5)
    for key in ("loss", "reference_margin", "chosen_logp_change", "rejected_logp_change"):
        assert frozen.final_eval[key] == pytest.approx(precomputed.final_eval[key], abs=1e-4)
    assert max_weight_difference(final_weights(frozen.run_dir), final_weights(precomputed.run_dir)) < 1e-5
    assert read_manifest(precomputed.run_dir)["reference"]["strategy"] == "precomputed"


def test_the_loss_falls_and_the_policy_moves(tmp_path, model_dir):
    result = train(tiny_config(tmp_path, model_dir, train={"max_steps": 6}))
    losses = logged_losses(result.run_dir)
    assert losses[0] == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-6)
    assert losses[-1] < losses[0] - 0.1
    assert result.final_eval["policy_margin"] > result.final_eval["reference_margin"]
    before = load_file(str(model_dir / "model.safetensors"))
    after = final_weights(result.run_dir)
    assert max_weight_difference(before, after) > 1e-3


def test_packed_and_padded_scorers_train_the_same_model(tmp_path, model_dir):
    """The packed scorer (prompt once, no padding) and the plain padded one are the same
    computation in another order: per-step losses agree within 1e-5, weights within 1e-5."""
    runs = {}
    for scorer in ("packed", "padded"):
        runs[scorer] = train(tiny_config(
            tmp_path, model_dir, run={"name": scorer}, optim=SMALL_LR,
            train={"batch_size": 4, "grad_accum": 2, "max_steps": 3, "scorer": scorer}))
    packed, padded = (runs[name].run_dir for name in ("packed", "padded"))
    assert len(logged_losses(packed)) == 3
    assert logged_losses(packed) == pytest.approx(logged_losses(padded), abs=1e-5)
    assert max_weight_difference(final_weights(packed), final_weights(padded)) < 1e-5
