"""Two CPU processes (torchrun, gloo) train exactly like one process with the same global batch.

Slow only because each process imports torch and transformers (~15 s on two shared cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from prefalign.engine.logger import read_metrics
from prefalign.engine.manifest import read_manifest
from prefalign.trainers.dpo.train import train
from run_helpers import tiny_config
from tiny_models import tiny_model_dir

WORKER = Path(__file__).with_name("distributed_worker.py")
SECTIONS = dict(optim={"lr": 1e-4, "schedule": "constant"})


def _train_block(**values):
    return {"max_steps": 3, "eval_every": 2, "threads": 1, **values}


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, tiny_tokenizer):
    model_dir = tiny_model_dir(tmp_path, tiny_tokenizer)
    two = tiny_config(tmp_path, model_dir, run={"name": "two"},
                      train=_train_block(batch_size=2, grad_accum=2), **SECTIONS)
    config_path = tmp_path / "two.json"
    config_path.write_text(json.dumps(two.to_dict()), encoding="utf-8")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", str(WORKER), str(config_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("rank-done outcome=completed steps=3") == 2

    one = train(tiny_config(tmp_path, model_dir, run={"name": "one"},
                            train=_train_block(batch_size=8), **SECTIONS))
    two_dir = tmp_path / "runs" / "two"
    assert read_manifest(two_dir)["schedule"]["processes"] == 2
    lines_one, lines_two = read_metrics(one.run_dir), read_metrics(two_dir)
    assert [(x["step"], x["split"]) for x in lines_one] == \
        [(x["step"], x["split"]) for x in lines_two]
    for a, b in zip(lines_one, lines_two, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5), (a["step"], a["split"])
        assert a.get("accuracy") == b.get("accuracy")
    weights_one = load_file(str(one.run_dir / "final" / "model.safetensors"))
    weights_two = load_file(str(two_dir / "final" / "model.safetensors"))
    assert max((weights_one[k] - weights_two[k]).abs().max().item() for k in weights_one) < 1e-5
