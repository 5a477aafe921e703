"""`prefalign grpo` on a tiny real model: a run end to end, importance ratios over μ passes,
tied groups, exact resume, and what the manifest records."""

from __future__ import annotations

import pytest

from prefalign.engine.logger import read_metrics
from prefalign.engine.manifest import read_manifest
from prefalign.trainers.grpo.train import train_grpo
from grpo_helpers import grpo_config, judge_file
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
