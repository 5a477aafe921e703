"""Verified state files: a checkpoint, reference cache or step-0 log-prob file damaged in place
(same size, other bytes) is never used. Resume names the checkpoint it skips and why in one
warning line and falls back to the newest verified one; a damaged cache is recomputed with a
notice; in every case the run ends exactly where the undamaged run ends."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from prefalign.data.tokenizer import CACHE_ENV
from prefalign.engine.logger import read_metrics
from prefalign.engine.manifest import read_manifest
from prefalign.integrity import CorruptStateError, sha256_file
from prefalign.trainers.dpo.train import train
from prefalign.trainers.loop.checkpoint import load_checkpoint, save_checkpoint, verify_checkpoint
from prefalign.trainers.loop.verify import resume_checkpoint
from run_helpers import final_weights, max_weight_difference, tiny_config
from tiny_models import tiny_llama, tiny_model_dir

LORA = {"enabled": True, "r": 4, "target_modules": ["q_proj", "v_proj"]}
SECTIONS = {"data": {"eval": []}, "train": {"save_every": 1, "keep_last": 3, "eval_every": 0}}


def damage(path: Path) -> None:
    """Change bytes in place, keeping the size, so that the file still parses (the silent
    kind): digits in JSON, the last 64 bytes of a safetensors file (tensor data; the header
    comes first), 64 bytes in the middle of anything else (zeroed, or 0x7f where zero)."""
    data = bytearray(path.read_bytes())
    if path.suffix == ".json":
        text = re.sub(rb"\d", lambda m: b"7" if m.group() != b"7" else b"3", bytes(data), count=4)
        assert text != bytes(data)
        data = bytearray(text)
    else:
        start = len(data) - 64 if path.suffix == ".safetensors" else len(data) // 2
        data[start:start + 64] = bytes(64) if any(data[start:start + 64]) else b"\x7f" * 64
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer)


def _sections(lora: bool, steps: int) -> dict:
    sections = {"data": SECTIONS["data"], "train": {**SECTIONS["train"], "max_steps": steps}}
    return {**sections, "lora": LORA} if lora else sections


@pytest.fixture(scope="module")
def runs(tmp_path_factory, model_dir):
    """Per kind (full, LoRA): a 3-step run with checkpoints 1-3, and an uninterrupted 4-step run."""
    made = {}
    for lora in (False, True):
        base = tmp_path_factory.mktemp("lora" if lora else "full")
        three = train(tiny_config(base / "three", model_dir, **_sections(lora, 3)))
        four = train(tiny_config(base / "four", model_dir, **_sections(lora, 4)))
        made[lora] = three.run_dir, four.run_dir
    return made


# checkpoints ------------------------------------------------------------------------------------

def test_the_marker_records_every_file_s_sha256(tiny_tokenizer, tmp_path):
    model = tiny_llama(tiny_tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = save_checkpoint(tmp_path, 1, policy=model, optimizer=optimizer, scheduler=None,
                           position={"step": 1}, keep_last=1)
    marker = json.loads((path / "COMPLETE").read_text())
    assert marker["sha256"] == {name: sha256_file(path / name) for name in marker["files"]}
    assert verify_checkpoint(path).ok and "4 files match their sha256" in \
        verify_checkpoint(path).detail


def test_a_checkpoint_saved_without_digests_passes_on_its_sizes(tiny_tokenizer, tmp_path):
    model = tiny_llama(tiny_tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = save_checkpoint(tmp_path, 1, policy=model, optimizer=optimizer, scheduler=None,
                           position={"step": 1}, keep_last=1)
    marker = json.loads((path / "COMPLETE").read_text())
    del marker["sha256"]
    (path / "COMPLETE").write_text(json.dumps(marker))
    check = verify_checkpoint(path)
    assert check.ok and "only sizes were checked" in check.detail
    assert load_checkpoint(path, policy=model, optimizer=optimizer, scheduler=None) == {"step": 1}


def test_a_damaged_file_is_not_loaded(tiny_tokenizer, tmp_path):
    """load_checkpoint checks every digest before it reads anything: the model keeps its weights."""
    model = tiny_llama(tiny_tokenizer, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = save_checkpoint(tmp_path, 1, policy=tiny_llama(tiny_tokenizer, seed=1),
                           optimizer=optimizer, scheduler=None, position={}, keep_last=1)
    damage(path / "optimizer.pt")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(CorruptStateError, match="optimizer.pt fails its sha256 check"):
        load_checkpoint(path, policy=model, optimizer=optimizer, scheduler=None)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


@pytest.mark.parametrize("lora, name", [
    (False, "model.safetensors"), (False, "optimizer.pt"), (False, "scheduler.json"),
    (False, "rng.pt"), (False, "position.json"), (False, "COMPLETE"),
    (True, "adapter.safetensors"),
])
def test_resume_skips_a_damaged_checkpoint_and_ends_as_the_undamaged_run(
        tmp_path, model_dir, runs, capsys, lora, name):
    """step-3's file damaged in place: one warning line names step-3 and the file, the run
    resumes from step-2, rewrites step-3, and ends with the uninterrupted run's weights."""
    three, four = runs[lora]
    run_dir = tmp_path / "runs" / "tiny"
    shutil.copytree(three, run_dir)
    damaged = run_dir / "checkpoints" / "step-3"
    damage(damaged / name)
    capsys.readouterr()
    config = tiny_config(tmp_path, model_dir, **_sections(lora, 4))
    result = train(config, resume=True)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    reason = "marker is unreadable" if name == "COMPLETE" else f"{name} fails its sha256 check"
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"prefalign: warning: skipping checkpoint {damaged}: ")
    assert reason in warnings[0] and warnings[0].endswith("; resuming from step-2")
    assert read_manifest(run_dir)["resumes"][-1]["from_step"] == 2
    assert result.outcome == "completed" and result.steps == 4
    assert verify_checkpoint(damaged).ok  # saved again by the resumed run
    assert max_weight_difference(final_weights(run_dir), final_weights(four)) == 0.0


def test_with_every_checkpoint_damaged_the_resume_says_so_and_starts_over(tmp_path, runs,
                                                                           capsys):
    three, _ = runs[False]
    run_dir = tmp_path / "run"
    shutil.copytree(three, run_dir)
    for step in (1, 2, 3):
        damage(run_dir / "checkpoints" / f"step-{step}" / "model.safetensors")
    assert resume_checkpoint(run_dir) is None
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[2].strip() for line in lines] == [
        f"skipping checkpoint {run_dir}/checkpoints/step-{step}" for step in (3, 2, 1)]
    assert all(line.endswith("no verified checkpoint is left, so training starts from step 0")
               for line in lines)


def test_a_damaged_manifest_stops_the_resume_naming_it(tmp_path, model_dir, runs):
    three, _ = runs[False]
    run_dir = tmp_path / "runs" / "tiny"
    shutil.copytree(three, run_dir)
    manifest = run_dir / "manifest.json"
    manifest.write_bytes(bytes(manifest.stat().st_size))
    with pytest.raises(CorruptStateError, match=f"{manifest} is not readable JSON"):
        train(tiny_config(tmp_path, model_dir, **_sections(False, 4)), resume=True)


# the precomputed reference cache ---------------------------------------------------------------

def _shift_chosen(path: Path, by: float) -> None:
    """Rewrite a cache file as a whole, valid file with its own key: only the numbers are off."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    tensors["chosen"] = tensors["chosen"] + by
    save_file(tensors, str(path), metadata=metadata)


def _truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 16)


def _shift_by_50(path: Path) -> None:
    _shift_chosen(path, -50.0)


# An explicit reference.cache file that cannot be read at all is refused rather than replaced
# (it may not be prefalign's: test_refcache), so truncation is tried at the default location.
@pytest.mark.parametrize("harm, reason, explicit", [
    (_shift_by_50, "its numbers fail their sha256 check", False),
    (_shift_by_50, "its numbers fail their sha256 check", True),
    (_truncate, "unreadable", False),
], ids=["shifted-default-location", "shifted-reference.cache", "truncated-default-location"])
def test_a_damaged_reference_cache_is_recomputed_with_a_notice(
        tmp_path, model_dir, monkeypatch, capsys, harm, reason, explicit):
    """Shifted log-probs would make step 1's loss 0.0067 instead of ln 2 and every accuracy
    1.0; they are recomputed instead, and the run ends as the one with the intact cache."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    reference = {"strategy": "precomputed",
                 "cache": str(tmp_path / "refcache") if explicit else None}
    first = train(tiny_config(tmp_path, model_dir, reference=reference,
                              **_sections(False, 2), run={"name": "first"}))
    cache = Path(read_manifest(first.run_dir)["reference"]["splits"]["train"]["cache"])
    harm(cache)
    capsys.readouterr()
    second = train(tiny_config(tmp_path, model_dir, reference=reference,
                               **_sections(False, 2), run={"name": "second"}))
    notices = [line for line in capsys.readouterr().err.splitlines() if "reference cache" in line]
    assert len(notices) == 1 and notices[0].startswith(
        f"prefalign: reference cache {cache} (train) is not reused: ")
    assert reason in notices[0] and notices[0].endswith("; recomputing it")
    split = read_manifest(second.run_dir)["reference"]["splits"]["train"]
    assert split["reused"] is False and reason in split["recomputed_because"]
    step_one = next(line for line in read_metrics(second.run_dir) if line["step"] == 1)
    assert step_one["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert max_weight_difference(final_weights(first.run_dir),
                                 final_weights(second.run_dir)) == 0.0


# the step-0 held-out log-probs of a reference-free loss ----------------------------------------

def test_damaged_initial_logps_are_rescored_from_the_starting_model(tmp_path, model_dir, capsys):
    """SimPO measures log-prob changes against the step-0 policy's held-out log-probs, kept in
    the run directory. Damaged, they are scored again from a fresh copy of the starting model
    (not from the resumed policy): the same numbers, and the same logged changes."""
    def simpo(where: Path, steps: int):
        return tiny_config(where, model_dir, loss={"name": "simpo", "params": {}},
                           reference={"strategy": "none"},
                           train={"save_every": 1, "eval_every": 1, "max_steps": steps})

    uninterrupted = train(simpo(tmp_path / "whole", 3))
    run_dir = train(simpo(tmp_path, 2)).run_dir
    path = run_dir / "initial-eval-logps.safetensors"
    original = {name: tensor.clone() for name, tensor in load_file(str(path)).items()}
    damage(path)
    capsys.readouterr()
    train(simpo(tmp_path, 3), resume=True)
    assert f"prefalign: {path}: its numbers fail their sha256 check" in capsys.readouterr().err
    rescored = load_file(str(path))
    assert all(torch.equal(rescored[name], original[name]) for name in original)
    logged = [line for line in read_metrics(run_dir) if line["split"] == "eval"][-1]
    expected = [line for line in read_metrics(uninterrupted.run_dir) if line["split"] == "eval"][-1]
    assert logged["chosen_logp_change"] == pytest.approx(expected["chosen_logp_change"], abs=1e-4)
