"""The loop's behaviour: run directory and records, refusing to overwrite, early stopping,
health events, non-finite losses, reference-free losses; and its pure parts (schedule, optimiser
groups, early-stopping direction)."""

from __future__ import annotations

import json
import math

import pytest
import torch

import prefalign.trainers.dpo.method as dpo_method
import prefalign.trainers.loop.run as run_module
from prefalign.config import ConfigError
from prefalign.engine.logger import read_metrics
from prefalign.engine.manifest import read_manifest
from prefalign.losses import LossOutput
from prefalign.trainers.dpo.train import train
from prefalign.trainers.loop.optim import build_optimizer, lr_factor
from prefalign.trainers.loop.run import RunDirError
from prefalign.trainers.loop.stopping import EarlyStopping, lower_is_better, metric_key
from run_helpers import tiny_config
from tiny_models import tiny_llama, tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer)


def test_a_run_leaves_manifest_metrics_checkpoints_and_a_loadable_final_model(tmp_path,
                                                                            model_dir):
    from transformers import AutoModelForCausalLM

    config = tiny_config(tmp_path, model_dir, train={"max_steps": 5, "save_every": 2,
                                                     "keep_last": 2, "eval_every": 2})
    result = train(config)
    run_dir = tmp_path / "runs" / "tiny"
    assert result.run_dir == run_dir and result.outcome == "completed" and result.steps == 5
    manifest = read_manifest(run_dir)
    assert manifest["outcome"] == "completed" and manifest["steps"] == 5
    assert len(manifest["data"]["train"]["fingerprint"]) == 64
    assert manifest["data"]["eval"]["counts"]["kept"] == 12
    assert manifest["model"]["weight_hash"] and manifest["reference"]["strategy"] == "frozen_copy"
    assert manifest["loss"] == {"name": "dpo", "params": {"beta": 0.1, "label_smoothing": 0.0,
                                                          "length_normalized": False}}
    assert manifest["chat_template"]["sha256"] and manifest["seed"] == 0
    assert manifest["final_eval"] == pytest.approx(result.final_eval)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-4", "step-5"]
    lines = read_metrics(run_dir)
    assert [x["step"] for x in lines if x["split"] == "train"] == [1, 2, 3, 4, 5]
    assert [x["step"] for x in lines if x["split"] == "eval"] == [2, 4, 5]
    for key in ("accuracy", "length_only_accuracy", "length_balanced_accuracy",
                "reward_length_corr", "chosen_logp_change", "both_fall", "policy_margin"):
        assert key in result.final_eval
    model = AutoModelForCausalLM.from_pretrained(str(run_dir / "final"))
    assert model.config.hidden_size == 32


def test_an_existing_run_is_not_overwritten(tmp_path, model_dir):
    config = tiny_config(tmp_path, model_dir, train={"max_steps": 1}, data={"eval": []})
    train(config)
    with pytest.raises(RunDirError, match="--resume.*new run.name"):
        train(config)


def test_resume_with_more_steps_continues_the_run(tmp_path, model_dir):
    """Linear decay: the first run ends its schedule at 0; the resumed steps follow the longer
    schedule (1e-3 × (1 - step/4)), not the rate the checkpoint's run reached."""
    sections = dict(data={"eval": []}, optim={"lr": 1e-3, "schedule": "linear"})
    train(tiny_config(tmp_path, model_dir, train={"max_steps": 2}, **sections))
    longer = tiny_config(tmp_path, model_dir, train={"max_steps": 4}, **sections)
    result = train(longer, resume=True)
    assert result.steps == 4
    assert [x["step"] for x in read_metrics(result.run_dir)] == [1, 2, 3, 4]
    assert [x["lr"] for x in read_metrics(result.run_dir)] == \
        pytest.approx([1e-3, 5e-4, 5e-4, 2.5e-4])
    manifest = read_manifest(result.run_dir)
    assert manifest["resumes"][0]["from_step"] == 2 and manifest["resumes"][0]["config_changed"]


def test_resume_refuses_other_data(tmp_path, model_dir):
    train(tiny_config(tmp_path, model_dir, train={"max_steps": 1}, data={"eval": []}))
    other = tiny_config(tmp_path, model_dir, train={"max_steps": 2}, data={"eval": [],
                                                                           "limit_train": 20})
    with pytest.raises(RunDirError, match="training data"):
        train(other, resume=True)


def test_early_stopping_on_a_metric_that_cannot_improve(tmp_path, model_dir):
    """The length-only baseline never changes: best at the first evaluation (step 1), no
    improvement at step 2, so with patience 1 the run stops there."""
    config = tiny_config(tmp_path, model_dir, train={
        "max_steps": 6, "eval_every": 1, "early_stopping_patience": 1,
        "early_stopping_metric": "eval/length_only_accuracy"})
    result = train(config)
    assert result.outcome == "early_stopped" and result.steps == 2 and result.best_step == 1
    manifest = read_manifest(result.run_dir)
    assert manifest["outcome"] == "early_stopped"
    assert manifest["early_stopping"]["best_step"] == 1


def test_early_stopping_config_is_checked_before_loading_anything(tmp_path, model_dir):
    config = tiny_config(tmp_path, model_dir, train={"early_stopping_patience": 2,
                                                     "eval_every": 1,
                                                     "early_stopping_metric": "eval/acuracy"})
    with pytest.raises(ConfigError, match="did you mean 'eval/accuracy'"):
        train(config)
    no_eval = tiny_config(tmp_path, model_dir, train={"early_stopping_patience": 2})
    with pytest.raises(ConfigError, match="eval_every"):
        train(no_eval)


def test_a_global_batch_larger_than_the_data_is_refused(tmp_path, model_dir):
    config = tiny_config(tmp_path, model_dir, train={"batch_size": 16, "grad_accum": 2})
    with pytest.raises(ConfigError, match="24 pairs are fewer than one global batch of 32"):
        train(config)


def test_a_policy_that_does_not_move_is_reported(tmp_path, model_dir, capsys):
    config = tiny_config(tmp_path, model_dir, optim={"lr": 1e-12},
                         train={"max_steps": 5}, data={"eval": []})
    result = train(config)
    assert "loss_stuck_at_identity" in capsys.readouterr().out
    events = [x for x in read_metrics(result.run_dir) if x["split"] == "health"]
    assert [(e["step"], e["event"]) for e in events] == [(5, "loss_stuck_at_identity")]
    assert read_manifest(result.run_dir)["health"][0]["name"] == "loss_stuck_at_identity"


class _NanOnSecondCall:
    """Wraps a configured loss; in the second training step the first pair's loss is NaN."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, policy, reference=None):
        output = self.inner(policy, reference)
        self.calls += policy.chosen.requires_grad  # training forwards only
        if self.calls != 2 or not policy.chosen.requires_grad:
            return output
        nan = torch.zeros_like(output.losses)
        nan[0] = math.nan
        return LossOutput(output.losses + nan, output.chosen_rewards, output.rejected_rewards)


def _poison_loss(monkeypatch):
    real = dpo_method.make_loss
    monkeypatch.setattr(dpo_method, "make_loss", lambda *a, **k: _NanOnSecondCall(real(*a, **k)))


def test_a_nan_loss_stops_the_run_naming_the_step_and_pair(tmp_path, model_dir, monkeypatch):
    _poison_loss(monkeypatch)
    config = tiny_config(tmp_path, model_dir, train={"max_steps": 4, "save_every": 1},
                         data={"eval": []})
    result = train(config)
    assert result.outcome == "failed: non-finite loss at step 2" and result.steps == 1
    manifest = read_manifest(result.run_dir)
    assert manifest["outcome"] == result.outcome
    assert manifest["non_finite"]["step"] == 2 and len(manifest["non_finite"]["pair_ids"]) == 1
    assert manifest["non_finite"]["pair_ids"][0].startswith(str(tmp_path / "data"))
    assert [p.name for p in (result.run_dir / "checkpoints").iterdir()] == ["step-1"]
    assert not (result.run_dir / "final").exists()


def test_a_nan_loss_can_skip_the_step(tmp_path, model_dir, monkeypatch):
    _poison_loss(monkeypatch)
    config = tiny_config(tmp_path, model_dir, train={"max_steps": 3, "on_nan": "skip"},
                         data={"eval": []})
    result = train(config)
    assert result.outcome == "completed" and result.steps == 3
    lines = read_metrics(result.run_dir)
    assert lines[1] == {**lines[1], "step": 2, "skipped_steps": 1} and "loss" not in lines[1]
    assert read_manifest(result.run_dir)["skipped_steps"] == 1


def test_a_reference_free_loss_measures_change_against_the_starting_policy(tmp_path, model_dir):
    config = tiny_config(tmp_path, model_dir, loss={"name": "simpo", "params": {}},
                         reference={"strategy": "none"}, train={"max_steps": 3})
    result = train(config)
    assert result.outcome == "completed"
    assert result.final_eval["chosen_logp_change"] != 0.0
    assert (result.run_dir / "initial-eval-logps.safetensors").is_file()
    assert json.loads((result.run_dir / "manifest.json").read_text())["reference"] == \
        {"strategy": "none"}


def test_lr_schedule_by_hand():
    """Warm-up 2 of 10 steps: 0, 0.5, then linear 1, 0.875, ... (8 decay steps), cosine
    ½(1 + cos(π·progress)): at step 6 progress is 0.5 so 0.5."""
    linear = [lr_factor(s, warmup_steps=2, total_steps=10, schedule="linear") for s in range(11)]
    assert linear[:4] == [0.0, 0.5, 1.0, 0.875] and linear[10] == 0.0
    assert lr_factor(6, warmup_steps=2, total_steps=10, schedule="cosine") == pytest.approx(0.5)
    assert lr_factor(9, warmup_steps=2, total_steps=10, schedule="constant") == 1.0


def test_no_weight_decay_on_norms_and_biases(tiny_tokenizer):
    from prefalign.config import OptimSection

    model = tiny_llama(tiny_tokenizer)
    optimizer = build_optimizer(model, OptimSection(weight_decay=0.1))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decayed["params"]) and all(p.ndim == 1 for p in plain["params"])


def test_early_stopping_direction_and_patience():
    assert lower_is_better("eval/loss") and not lower_is_better("eval/accuracy")
    assert metric_key("eval/length_balanced_accuracy") == "length_balanced_accuracy"
    stopping = EarlyStopping("eval/accuracy", patience=2)
    assert not stopping.update(1, {"accuracy": 0.6})
    assert not stopping.update(2, {"accuracy": 0.6})  # equal is not better
    assert not stopping.update(3, {"accuracy": 0.7})
    assert not stopping.update(4, {"accuracy": 0.65})
    assert stopping.update(5, {"accuracy": 0.7}) and stopping.best_step == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_adamw_equals_the_plain_loop(tiny_tokenizer, dtype):
    """optim.fused (torch's fused kernel, the default) against the per-tensor loop: five steps
    of the same gradients, weight decay on, land on the same weights within 1e-6 relative
    in float32, 1e-2 (about one rounding step) in bfloat16."""
    from prefalign.config import OptimSection

    models = [tiny_llama(tiny_tokenizer).to(dtype) for _ in range(2)]
    optimizers = [build_optimizer(model, OptimSection(lr=1e-2, weight_decay=0.1, fused=fused))
                  for model, fused in zip(models, (True, False), strict=True)]
    assert [o.param_groups[0]["fused"] for o in optimizers] == [True, None]
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        for parameter in models[0].parameters():
            parameter.grad = torch.randn(parameter.shape, generator=generator).to(dtype)
        for fused, plain in zip(models[0].parameters(), models[1].parameters(), strict=True):
            plain.grad = fused.grad.clone()
        for optimizer in optimizers:
            optimizer.step()
    moved = False
    start = tiny_llama(tiny_tokenizer).to(dtype).state_dict()
    float32 = dtype == torch.float32
    tolerance = {"rtol": 1e-6, "atol": 1e-7} if float32 else {"rtol": 1e-2, "atol": 1e-3}
    pairs = zip(models[0].named_parameters(), models[1].parameters(), strict=True)
    for (name, fused), plain in pairs:
        torch.testing.assert_close(fused, plain, **tolerance, msg=name)
        moved |= not torch.equal(fused, start[name])
    assert moved


def test_accelerate_fsdp_and_deepspeed_configs_are_refused_with_what_to_use():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    for kind, hint in ((DistributedType.FSDP, "set train.fsdp: true"),
                       (DistributedType.DEEPSPEED, "does not support")):
        with pytest.raises(ConfigError, match=hint):
            run_module._refuse_accelerate_sharding(SimpleNamespace(distributed_type=kind))
    run_module._refuse_accelerate_sharding(SimpleNamespace(distributed_type=DistributedType.NO))


@pytest.mark.parametrize(("pairs", "world", "size", "rounds"),
                         [(11, 2, 5, 2), (10, 2, 5, 1), (3, 4, 8, 1), (17, 3, 2, 3)])
def test_sharded_evaluation_runs_the_largest_share_s_batches(pairs, world, size, rounds):
    from prefalign.trainers.loop.heldout import batch_rounds

    shares = torch.arange(pairs).tensor_split(world)  # as score_heldout splits the split
    assert batch_rounds(pairs, world, size) == rounds == max(len(s.split(size)) for s in shares)


@pytest.mark.parametrize(("keep", "tune_process", "applied"), [
    (None, False, False), (None, True, True), (True, False, True), (False, True, False)])
def test_the_switch_decides_whether_a_run_keeps_freed_memory(tmp_path, model_dir, monkeypatch,
                                                              keep, tune_process, applied):
    """A library call leaves malloc alone unless asked (tune_process, as the CLI does); an
    explicit train.keep_freed_memory wins either way."""
    from prefalign.engine import heap

    calls = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append(1) or True)
    train(tiny_config(tmp_path, model_dir, train={"max_steps": 1, "keep_freed_memory": keep}),
          tune_process=tune_process)
    assert calls == ([1] if applied else [])
