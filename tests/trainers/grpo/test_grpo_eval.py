"""`prefalign eval` reads a GRPO run like any policy run: the trained LoRA policy against the
model it started from, on the default held-out pairs, the safety prompts and the KL prompts; the
run's objective is what the report names."""

from __future__ import annotations

import json

from grpo_helpers import grpo_config

from prefalign.eval.generate import DecodeSettings
from prefalign.eval.runner import EvalOptions, run_eval
from prefalign.trainers.grpo.train import train_grpo
from tiny_models import tiny_model_dir

SMALL = EvalOptions(max_pairs=8, harmful=2, benign=2, kl_prompts=2, helpful_pairs=0,
                    decoding=DecodeSettings(max_new_tokens=4, batch_size=4), batch_size=4)


def test_eval_compares_a_grpo_run_with_its_start(tmp_path, tiny_tokenizer):
    model_dir = tiny_model_dir(tmp_path, tiny_tokenizer)
    config = grpo_config(tmp_path, model_dir, lora={"enabled": True, "r": 4, "alpha": 8},
                         train={"max_steps": 1})
    run_dir = train_grpo(config).run_dir
    results = run_eval(run_dir, tmp_path / "out", SMALL)
    assert results["heldout"]["overall"]["n"] == 8
    assert results["generation"]
    on_disk = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert on_disk["run"]["name"] == "tiny-grpo"
    assert on_disk["run"]["loss"] == "grpo/grpo" and on_disk["run"]["beta"] == 0.0
    assert (tmp_path / "out" / "summary.md").is_file()
