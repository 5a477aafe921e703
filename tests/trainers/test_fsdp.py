"""`train.fsdp`: two CPU processes (torchrun, gloo) with FSDP2-sharded parameters, gradients and
optimiser state train exactly like one unsharded process with the same global batch: losses,
held-out metrics, the checkpoint's whole weights and `final/`. Resuming a sharded run from its
gathered checkpoint ends where the uninterrupted run does. Full fine-tune (tied embeddings,
gradient checkpointing) and LoRA with the adapter switched off as the reference.

Tolerance 1e-5, as for DDP (float32 sums in another order), or 1e-4 relative. The reward-length
correlation gets 1e-2: after 3 steps at lr 1e-4 the LoRA rewards are below 1e-3, so the float32
noise of ~15-nat log-prob sums moves their correlation in the third digit. The held-out split
has 11 pairs and eval_batch_size 5, so the processes' shares (6 and 5 pairs) need 2 and 1
batches: the sharded forward is a collective, and the shorter share must run a dropped batch to
keep in step (without it the run fails).
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
from run_helpers import pair_rows, tiny_config, write_pairs
from tiny_models import tiny_model_dir

WORKER = Path(__file__).with_name("distributed_worker.py")
OPTIM = {"lr": 1e-4, "schedule": "constant"}
LORA = {"enabled": True, "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}


def _sections(tmp_path: Path, steps: int, **train) -> dict:
    heldout = write_pairs(tmp_path / "data" / "eval-11.jsonl", rows=pair_rows(35)[24:])
    return dict(optim=OPTIM, data={"eval": [str(heldout)]},
                train={"max_steps": steps, "eval_every": 2, "save_every": 2, "threads": 1,
                       "eval_batch_size": 5, **train})


def _launch(tmp_path: Path, config, *extra: str) -> None:
    path = tmp_path / f"{config.run.name}.json"
    path.write_text(json.dumps(config.to_dict()), encoding="utf-8")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", str(WORKER), str(path), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("rank-done outcome=completed") == 2


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _numbers(line: dict) -> set[str]:
    return {k for k, v in line.items() if isinstance(v, float) and k not in ("time", "lr")}


def _same_run(one: Path, two: Path, weights: str) -> None:
    lines_one, lines_two = read_metrics(one), read_metrics(two)
    assert [(x["step"], x["split"]) for x in lines_one] == \
        [(x["step"], x["split"]) for x in lines_two]
    for a, b in zip(lines_one, lines_two, strict=True):
        numbers = _numbers(a)
        assert numbers >= {"loss"} and numbers == _numbers(b)
        for key in numbers:  # loss, accuracy, margins, log-prob changes, gradient norm ...
            tolerance = 1e-2 if key == "reward_length_corr" else 1e-5
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=tolerance), (a["step"], key)
    final_one = load_file(str(one / "final" / weights))
    final_two = load_file(str(two / "final" / weights))
    assert _max_difference(final_one, final_two) < 1e-5


@pytest.mark.slow
def test_sharded_full_fine_tune_equals_one_process_and_resumes(tmp_path, tiny_tokenizer):
    model_dir = tiny_model_dir(tmp_path, tiny_tokenizer)
    checkpointing = dict(model={"gradient_checkpointing": True})  # blocks recomputed, sharded
    sharded = tiny_config(tmp_path, model_dir, run={"name": "sharded"}, **checkpointing,
                          **_sections(tmp_path, 3, batch_size=2, grad_accum=2, fsdp=True))
    _launch(tmp_path, sharded)
    one = train(tiny_config(tmp_path, model_dir, run={"name": "one"}, **checkpointing,
                            **_sections(tmp_path, 3, batch_size=8)))
    two = tmp_path / "runs" / "sharded"
    assert read_manifest(two)["schedule"]["processes"] == 2
    assert read_manifest(two)["config"]["train"]["fsdp"] is True
    _same_run(one.run_dir, two, "model.safetensors")
    # The checkpoint holds whole tensors, tied names saved once, as an unsharded run writes them.
    step2_one = load_file(str(one.run_dir / "checkpoints" / "step-2" / "model.safetensors"))
    step2_two = load_file(str(two / "checkpoints" / "step-2" / "model.safetensors"))
    assert _max_difference(step2_one, step2_two) < 1e-5

    _resume_ends_where_it_would_have(tmp_path, model_dir, "model.safetensors", checkpointing,
                                     batch_size=2, grad_accum=2)


def _resume_ends_where_it_would_have(tmp_path: Path, model_dir: Path, weights: str,
                                     sections: dict, **train) -> None:
    """Stopped after step 2, then resumed from the gathered step-2 checkpoint: the same final
    weights as the uninterrupted sharded run `sharded`."""
    for steps, extra in ((2, ()), (3, ("--resume",))):
        _launch(tmp_path, tiny_config(tmp_path, model_dir, run={"name": "resumed"}, **sections,
                                      **_sections(tmp_path, steps, fsdp=True, **train)), *extra)
    runs = tmp_path / "runs"
    assert [r["from_step"] for r in read_manifest(runs / "resumed")["resumes"]] == [2]
    final = load_file(str(runs / "sharded" / "final" / weights))
    assert _max_difference(final, load_file(str(runs / "resumed" / "final" / weights))) < 1e-6


@pytest.mark.slow
def test_sharded_with_the_precomputed_reference_equals_one_process(tmp_path, tiny_tokenizer,
                                                                   monkeypatch):
    """The strategy docs/distributed.md advises under sharding: computed once by the main
    process before sharding, read by both."""
    monkeypatch.setenv("PREFALIGN_CACHE", str(tmp_path / "cache"))
    model_dir = tiny_model_dir(tmp_path, tiny_tokenizer)
    sections = dict(reference={"strategy": "precomputed"})
    _launch(tmp_path, tiny_config(tmp_path, model_dir, run={"name": "sharded"}, **sections,
                                  **_sections(tmp_path, 3, batch_size=4, fsdp=True)))
    one = train(tiny_config(tmp_path, model_dir, run={"name": "one"}, **sections,
                            **_sections(tmp_path, 3, batch_size=8)))
    _same_run(one.run_dir, tmp_path / "runs" / "sharded", "model.safetensors")
    assert read_manifest(tmp_path / "runs" / "one")["reference"]["splits"]["train"]["reused"]


@pytest.mark.slow
def test_sharded_lora_with_the_adapter_off_equals_one_process_and_resumes(tmp_path,
                                                                          tiny_tokenizer):
    model_dir = tiny_model_dir(tmp_path, tiny_tokenizer)
    sections = dict(lora=LORA, reference={"strategy": "adapter_off"})
    _launch(tmp_path, tiny_config(tmp_path, model_dir, run={"name": "sharded"}, **sections,
                                  **_sections(tmp_path, 3, batch_size=4, fsdp=True)))
    one = train(tiny_config(tmp_path, model_dir, run={"name": "one"}, **sections,
                            **_sections(tmp_path, 3, batch_size=8)))
    _same_run(one.run_dir, tmp_path / "runs" / "sharded", "adapter_model.safetensors")
    _resume_ends_where_it_would_have(tmp_path, model_dir, "adapter_model.safetensors",
                                     sections, batch_size=4)
