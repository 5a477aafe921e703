"""A real `prefalign loop` process killed (SIGKILL) in the middle of a round's DPO run; `--resume`
continues that run from its last checkpoint and ends with the weights of an uninterrupted loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import prefalign
from loop.rounds_helpers import loop_config, write_yaml
from prefalign.api import loop as run_loop_api
from run_helpers import final_weights, max_weight_difference
from tiny_models import tiny_model_dir

STEPS = 60


def one_round(tmp_path: Path, model_dir: Path, name: str) -> dict:
    config = loop_config(tmp_path, model_dir, name=name, rounds=1, eval=None)
    config["train"]["settings"]["train"].update(max_steps=STEPS, save_every=2, keep_last=1)
    return config


@pytest.mark.slow
def test_a_loop_killed_mid_training_resumes_the_run(tmp_path, tiny_tokenizer):
    model_dir = tiny_model_dir(tmp_path, tiny_tokenizer, initializer_range=0.2)
    uninterrupted = run_loop_api(one_round(tmp_path, model_dir, "whole"))
    config = one_round(tmp_path, model_dir, "killed")
    path = write_yaml(tmp_path / "killed.yaml", config)
    run_dir = tmp_path / "loops" / "killed" / "round-1" / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(prefalign.__file__).parents[1])}
    process = subprocess.Popen([sys.executable, "-m", "prefalign.cli.main", "loop", "-c",
                                str(path), "--quiet"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if any((run_dir / "checkpoints").glob("step-*/COMPLETE")):
                break
            time.sleep(0.01)
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert not (run_dir / "final").exists()  # killed mid-run
    state = json.loads((tmp_path / "loops" / "killed" / "state.json").read_text())
    assert set(state["stages"]["1"]) == {"samples", "pairs"}

    stages: list[tuple[int, str]] = []
    run_loop_api(config, resume=True, on_stage=lambda r, s: stages.append((r, s)))
    assert stages == [(1, "train")]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["outcome"] == "completed" and manifest["steps"] == STEPS
    assert [0 < r["from_step"] < STEPS for r in manifest["resumes"]] == [True]  # not started over
    whole = uninterrupted.loop_dir / "round-1" / "run"
    assert max_weight_difference(final_weights(run_dir), final_weights(whole)) < 1e-6
