"""Checkpoints: exact resume (full and LoRA with dropout), atomic saves, pruning, discovery."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from prefalign.trainers.loop import checkpoint
from prefalign.trainers.loop.checkpoint import (
    checkpoint_step,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from tiny_models import tiny_llama

STEPS_BEFORE, STEPS_AFTER = 2, 3


def _build(tokenizer, *, lora: bool, seed: int):
    """Model, AdamW and warm-up/linear LambdaLR; `seed` only changes the trainable init."""
    model = tiny_llama(tokenizer, seed=0 if lora else seed, attention_dropout=0.1)
    if lora:
        torch.manual_seed(seed)  # a different adapter init, so loading visibly matters
        config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.2,
                            target_modules=["q_proj", "v_proj"])
        model = get_peft_model(model, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / 2, 1.0) * max(0.0, 1 - s / 10)
    )
    return model, optimizer, scheduler


def _batches(tokenizer, count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(123)
    return [torch.randint(0, len(tokenizer), (2, 12), generator=generator) for _ in range(count)]


def _train(model, optimizer, scheduler, batches) -> None:
    model.train()
    for input_ids in batches:
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resume_is_exact(tiny_tokenizer, tmp_path, lora):
    """Save at step k, train m more; fresh objects loaded from step k and trained the same m steps
    end with bitwise equal weights (dropout is on, so the RNG restore matters)."""
    batches = _batches(tiny_tokenizer, STEPS_BEFORE + STEPS_AFTER)
    model, optimizer, scheduler = _build(tiny_tokenizer, lora=lora, seed=0)
    _train(model, optimizer, scheduler, batches[:STEPS_BEFORE])
    position = {"step": STEPS_BEFORE, "epoch": 0, "batch_in_epoch": STEPS_BEFORE}
    path = save_checkpoint(tmp_path, STEPS_BEFORE, policy=model, optimizer=optimizer,
                           scheduler=scheduler, position=position, keep_last=2)
    _train(model, optimizer, scheduler, batches[STEPS_BEFORE:])
    expected = _trainable(model)

    fresh, fresh_optimizer, fresh_scheduler = _build(tiny_tokenizer, lora=lora, seed=1)
    torch.manual_seed(999)  # scramble the generator the checkpoint must restore
    restored = load_checkpoint(path, policy=fresh, optimizer=fresh_optimizer,
                               scheduler=fresh_scheduler)
    assert restored == position
    assert fresh_scheduler.last_epoch == STEPS_BEFORE
    _train(fresh, fresh_optimizer, fresh_scheduler, batches[STEPS_BEFORE:])
    actual = _trainable(fresh)
    assert actual.keys() == expected.keys()
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name


def test_rng_states_round_trip(tiny_tokenizer, tmp_path):
    """python `random`, numpy and torch draws after loading repeat the draws after saving."""
    model, optimizer, scheduler = _build(tiny_tokenizer, lora=False, seed=0)
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    path = save_checkpoint(tmp_path, 1, policy=model, optimizer=optimizer, scheduler=scheduler,
                           position={"step": 1}, keep_last=1)
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    load_checkpoint(path, policy=model, optimizer=optimizer, scheduler=scheduler)
    actual = (random.random(), np.random.rand(), torch.rand(3))
    assert actual[:2] == expected[:2]
    assert torch.equal(actual[2], expected[2])


def test_checkpoint_files(tiny_tokenizer, tmp_path):
    """Full model: tied weights saved once as safetensors; scheduler as JSON; nothing pickled."""
    model, optimizer, scheduler = _build(tiny_tokenizer, lora=False, seed=0)
    path = save_checkpoint(tmp_path, 7, policy=model, optimizer=optimizer, scheduler=scheduler,
                           position={"step": 7}, keep_last=1)
    assert path == tmp_path / "checkpoints" / "step-7"
    assert checkpoint_step(path) == 7
    names = {p.name for p in path.iterdir()}
    assert names == {"model.safetensors", "optimizer.pt", "scheduler.json", "rng.pt",
                     "position.json", "COMPLETE"}
    marker = json.loads((path / "COMPLETE").read_text())
    assert marker["step"] == 7 and marker["kind"] == "full"
    assert set(marker["files"]) == names - {"COMPLETE"}
    with pytest.raises(ValueError, match="LoRA"):
        lora_model, _, _ = _build(tiny_tokenizer, lora=True, seed=0)
        load_checkpoint(path, policy=lora_model, optimizer=None, scheduler=None)


def test_lora_checkpoint_holds_only_the_adapter(tiny_tokenizer, tmp_path):
    from safetensors.torch import load_file

    model, optimizer, scheduler = _build(tiny_tokenizer, lora=True, seed=0)
    path = save_checkpoint(tmp_path, 1, policy=model, optimizer=optimizer, scheduler=scheduler,
                           position={"step": 1}, keep_last=1)
    assert not (path / "model.safetensors").exists()
    tensors = load_file(str(path / "adapter.safetensors"))
    assert tensors and all("lora_" in name for name in tensors)


def test_keep_last_prunes_older_checkpoints(tiny_tokenizer, tmp_path):
    model, optimizer, scheduler = _build(tiny_tokenizer, lora=True, seed=0)
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, policy=model, optimizer=optimizer, scheduler=scheduler,
                        position={"step": step}, keep_last=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-3", "step-4"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-4"


def test_crash_while_saving_keeps_the_previous_checkpoint(tiny_tokenizer, tmp_path, monkeypatch):
    """A writer raising midway (after the weights) leaves step-1 intact, loadable and latest."""
    model, optimizer, scheduler = _build(tiny_tokenizer, lora=False, seed=0)
    first = save_checkpoint(tmp_path, 1, policy=model, optimizer=optimizer, scheduler=scheduler,
                            position={"step": 1}, keep_last=1)
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_write_scheduler", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, policy=model, optimizer=optimizer, scheduler=scheduler,
                        position={"step": 2}, keep_last=1)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-1"]
    assert latest_checkpoint(tmp_path) == first
    assert load_checkpoint(first, policy=model, optimizer=optimizer,
                           scheduler=scheduler) == {"step": 1}
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, saved[name]), name


def test_latest_ignores_temp_partial_and_truncated_dirs(tiny_tokenizer, tmp_path):
    """A hard crash's staging dir, a half-copied dir without marker, a truncated file: skipped."""
    model, optimizer, scheduler = _build(tiny_tokenizer, lora=True, seed=0)
    good = save_checkpoint(tmp_path, 3, policy=model, optimizer=optimizer, scheduler=scheduler,
                           position={"step": 3}, keep_last=3)
    root = tmp_path / "checkpoints"
    staging = root / ".tmp-step-9"
    staging.mkdir()
    (staging / "adapter.safetensors").write_bytes(b"partial")
    (root / "step-7").mkdir()  # copied without its marker
    truncated = save_checkpoint(tmp_path, 5, policy=model, optimizer=optimizer,
                                scheduler=scheduler, position={"step": 5}, keep_last=3)
    with open(truncated / "optimizer.pt", "r+b") as handle:
        handle.truncate(10)
    assert latest_checkpoint(tmp_path) == good
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        load_checkpoint(truncated, policy=model, optimizer=optimizer, scheduler=scheduler)
    assert latest_checkpoint(tmp_path / "elsewhere") is None
    # The next save clears the stale staging dir.
    save_checkpoint(tmp_path, 6, policy=model, optimizer=optimizer, scheduler=scheduler,
                    position={"step": 6}, keep_last=3)
    assert not staging.exists()


def test_saving_the_same_step_again_replaces_it(tiny_tokenizer, tmp_path):
    model, optimizer, scheduler = _build(tiny_tokenizer, lora=True, seed=0)
    for label in ("first", "second"):
        path = save_checkpoint(tmp_path, 4, policy=model, optimizer=optimizer,
                               scheduler=scheduler, position={"label": label}, keep_last=2)
    assert load_checkpoint(path, policy=model, optimizer=None, scheduler=None) == {
        "label": "second"}
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-4"]


def test_gathered_weights_are_written_as_a_plain_save_writes_them(tiny_tokenizer, tmp_path):
    """A sharded run passes whole tensors gathered as copies (tied names each with its own);
    the file holds the same names and values as `save_model` writes for the live model."""
    from safetensors.torch import load_file

    model, optimizer, scheduler = _build(tiny_tokenizer, lora=False, seed=0)
    plain = save_checkpoint(tmp_path / "plain", 1, policy=model, optimizer=optimizer,
                            scheduler=scheduler, position={}, keep_last=1)
    copies = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= copies.keys()  # tied
    by_name = {"state": {}, "param_groups": [{"lr": 1e-2, "params": sorted(copies)}]}
    gathered = save_checkpoint(tmp_path / "gathered", 1, policy=model, optimizer=optimizer,
                               scheduler=scheduler, position={}, keep_last=1,
                               weights=copies, optimizer_state=by_name)
    written = load_file(str(gathered / "model.safetensors"))
    expected = load_file(str(plain / "model.safetensors"))
    assert written.keys() == expected.keys() and len(written) == len(copies) - 1
    assert all(torch.equal(written[name], expected[name]) for name in expected)
    # Optimiser state keyed by name comes only from a sharded run: refused without train.fsdp.
    with pytest.raises(ValueError, match="saved with train.fsdp; resume it with"):
        load_checkpoint(gathered, policy=model, optimizer=optimizer, scheduler=scheduler)
