"""`prefalign grpo` on a tiny real model: a run end to end, importance ratios over μ passes,
tied groups, exact resume, and what the manifest records."""

from __future__ import annotations

import pytest
from grpo_helpers import grpo_config, judge_file

from prefalign.engine.logger import read_metrics
from prefalign.engine.manifest import read_manifest
from prefalign.trainers.grpo.train import train_grpo
from run_helpers import final_weights, max_weight_difference
from tiny_models import tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer)


def _train_logs(run_dir):
    return [line for line in read_metrics(run_dir) if line["split"] == "train"]


def test_a_run_samples_judges_logs_and_saves(tmp_path, model_dir):
    result = train_grpo(grpo_config(tmp_path, model_dir))
    assert result.outcome == "completed" and result.steps == 2
    logs = _train_logs(result.run_dir)
    assert len(logs) == 2
    for line in logs:
        assert line["completions"] == 4.0  # 2 prompts × G = 2
        assert 1 <= line["completions/length_mean"] <= 6
        assert 0 <= line["completions/truncated_fraction"] <= 1
        assert line["reward/mean"] > 0 and line["entropy"] > 0
        assert line["ratio/max_deviation"] == 0.0  # μ = 1: ρ is exactly 1
        assert line["kl"] == 0.0
    assert (result.run_dir / "final").is_dir()


def test_mu_passes_divide_by_the_sampling_policy(tmp_path, model_dir):
    """μ = 2: step 1 (the first pass) has ρ exactly 1; step 2 reuses the same completions
    (same rewards) after an update, so ρ differs from 1."""
    config = grpo_config(tmp_path, model_dir, grpo={"mu": 2}, train={"max_steps": 4})
    logs = _train_logs(train_grpo(config).run_dir)
    assert [line["ratio/max_deviation"] == 0.0 for line in logs] == [True, False, True, False]
    assert logs[0]["reward/mean"] == logs[1]["reward/mean"]
    assert logs[0]["completions/length_mean"] == logs[1]["completions/length_mean"]
    assert logs[1]["ratio/max_deviation"] > 1e-6


def test_tied_groups_are_logged_and_give_no_gradient(tmp_path, model_dir):
    """A judge that returns a constant: every group tied, every advantage 0, so the loss and its
    gradient are exactly 0 and the weights do not move."""
    constant = f"{judge_file(tmp_path)}:constant"
    config = grpo_config(tmp_path, model_dir, grpo={"judges": [constant]},
                         train={"max_steps": 5})
    result = train_grpo(config)
    events = [event["name"] for event in read_manifest(result.run_dir)["health"]]
    assert events == ["groups_all_tied"]
    for line in _train_logs(result.run_dir):
        assert line["groups/tied_fraction"] == 1.0
        assert line["advantages/abs_mean"] == 0.0
        assert line["grad_norm"] == 0.0 and line["loss"] == 0.0
        assert line["reward/std"] == 0.0


def test_kind_scoped_judges_score_their_kind_only(tmp_path, model_dir):
    """`constant@2` on benign prompts only: its own column reads 1 over the benign completions
    (the harmful ones are not its), and the manifest names it with its kind."""
    judges = judge_file(tmp_path)
    config = grpo_config(tmp_path, model_dir, train={"max_steps": 3},
                         grpo={"judges": [f"{judges}:length"],
                               "benign_judges": [f"{judges}:constant@2"]})
    result = train_grpo(config)
    scoped = f"{judges}:constant[benign]"
    for line in _train_logs(result.run_dir):
        if f"reward/{scoped}/mean" in line:  # a step with a benign prompt
            assert line[f"reward/{scoped}/mean"] == 1.0
            assert line[f"reward/{scoped}/std"] == 0.0
    assert any(f"reward/{scoped}/mean" in line for line in _train_logs(result.run_dir))
    ids = [judge["id"] for judge in read_manifest(result.run_dir)["grpo"]["judges"]["judges"]]
    assert ids == [f"{judges}:length", scoped]


@pytest.mark.parametrize("grpo", [{"mu": 2, "normalisation": "dapo"},
                                  {"estimator": "rloo", "normalisation": "dr_grpo"}])
def test_resume_gives_the_uninterrupted_run(tmp_path, model_dir, grpo):
    sections = {"grpo": grpo, "optim": {"lr": 1e-3, "schedule": "constant"}}
    whole = train_grpo(grpo_config(tmp_path, model_dir, run={"name": "whole"},
                                   train={"max_steps": 4}, **sections))
    train_grpo(grpo_config(tmp_path, model_dir, run={"name": "cut"},
                           train={"max_steps": 2, "save_every": 2}, **sections))
    resumed = train_grpo(grpo_config(tmp_path, model_dir, run={"name": "cut"},
                                     train={"max_steps": 4}, **sections), resume=True)
    strip = ("lr",)
    def rows(run_dir):
        return [{k: v for k, v in line.items() if k not in strip and k != "time"}
                for line in _train_logs(run_dir)]
    assert [r["reward/mean"] for r in rows(resumed.run_dir)] == \
        [r["reward/mean"] for r in rows(whole.run_dir)]
    assert max_weight_difference(final_weights(whole.run_dir),
                                 final_weights(resumed.run_dir)) == 0


def test_kl_to_the_adapter_off_reference(tmp_path, model_dir):
    """LoRA with β > 0: the reference is the policy with its adapter off; KL is 0 at step 1
    (the adapter starts at zero) and positive once the adapter has moved."""
    config = grpo_config(tmp_path, model_dir, grpo={"beta": 0.1},
                         lora={"enabled": True, "r": 4, "alpha": 8},
                         reference={"strategy": "adapter_off"},
                         optim={"lr": 5e-2, "schedule": "constant"}, train={"max_steps": 3})
    result = train_grpo(config)
    logs = _train_logs(result.run_dir)
    assert logs[0]["kl"] == pytest.approx(0.0, abs=1e-7)
    assert logs[-1]["kl"] > 0
    manifest = read_manifest(result.run_dir)
    assert manifest["grpo"]["reference"]["strategy"] == "adapter_off"


def test_manifest_records_sampling_and_judges_with_hashes(tmp_path, model_dir):
    config = grpo_config(tmp_path, model_dir, grpo={"temperature": 0.7, "top_k": 5},
                         train={"max_steps": 1})
    manifest = read_manifest(train_grpo(config).run_dir)
    grpo = manifest["grpo"]
    assert manifest["method"] == "grpo"
    assert grpo["sampling"]["temperature"] == 0.7 and grpo["sampling"]["top_k"] == 5
    assert grpo["sampling"]["num_samples"] == 2 and grpo["sampling"]["max_new_tokens"] == 6
    (judge,) = grpo["judges"]["judges"]
    assert judge["id"].endswith("tiny_judges.py:length") and len(judge["hash"]) >= 16
    assert manifest["data"]["train"]["prompts"] == 8
