"""Atomic training checkpoints: weights (or LoRA adapter), optimizer, scheduler, RNG, data position.

Layout of `run_dir/checkpoints/step-N/`:
  model.safetensors or adapter.safetensors   the whole model, or the LoRA adapter weights only
  optimizer.pt                               optimizer.state_dict(), read back weights_only
                                             (under train.fsdp: whole tensors keyed by name)
  scheduler.json (scheduler.pt as fallback)  scheduler.state_dict()
  rng.pt                                     python, numpy, torch CPU and CUDA generator states
  position.json                              the loop's data position (step, epoch, batch, ...)
  COMPLETE                                   written last: step, kind, every file's size and sha256

A checkpoint is assembled in `checkpoints/.tmp-step-N` (each file fsynced) and renamed into place,
so a crash while saving leaves the previous checkpoint untouched. `latest_checkpoint` picks only
directories whose COMPLETE marker lists files that are all present at their recorded sizes, which
also rules out half-copied run directories; `verify_checkpoint` also checks every file's sha256,
and `load_checkpoint` loads nothing that fails it (a file damaged in place keeps its size).
Nothing is unpickled: torch files load weights_only. A full disk or a denied write while saving
is raised as a `StorageError` naming the checkpoint and the bytes it needed.

A sharded policy (`train.fsdp`) is saved from whole tensors gathered beforehand on every process
(`sharding.full_model_state` / `full_optimizer_state`, passed as `weights` / `optimizer_state`),
in the same files and layout, and read back into its shards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_file, save_model
from torch import nn

from prefalign.atomic import replace_dir, write_json_atomic
from prefalign.engine.state_files import (
    first_line,
    read_json,
    safetensors_load,
    tensor_bytes,
    torch_load,
    torch_save,
)
from prefalign.integrity import Check, CorruptStateError, file_problem, sha256_file
from prefalign.storage import reporting_storage
from prefalign.trainers.loop.rng import capture_rng, restore_rng
from prefalign.trainers.loop.sharding import (
    is_sharded,
    load_full_model_state,
    load_full_optimizer_state,
)

CHECKPOINTS = "checkpoints"
MARKER = "COMPLETE"
FULL_WEIGHTS = "model.safetensors"
ADAPTER_WEIGHTS = "adapter.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    position: dict,
    keep_last: int,
    weights: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write `checkpoints/step-{step}` atomically, then prune all but the newest `keep_last`.

    `policy` is the unwrapped model: a peft PeftModel (only the adapter is saved) or a plain
    transformers model (all of it). Call it on the main process only. For a sharded policy pass
    the gathered `weights` and `optimizer_state`, which are written instead.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    root = Path(run_dir) / CHECKPOINTS
    target = root / f"step-{step}"
    with reporting_storage(target, _bytes_of(policy, weights, optimizer, optimizer_state)):
        root.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(root)
        staging = root / f".tmp-step-{step}"
        staging.mkdir()
        try:
            kind = _write_weights(staging, policy, weights)
            _write_optimizer(staging, optimizer, optimizer_state)
            _write_scheduler(staging, scheduler)
            _write_rng(staging)
            write_json_atomic(position, staging / "position.json")
            _write_marker(staging, step, kind)
            _publish(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _prune(root, keep_last, keep=target)
    return target


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None; temp and partial dirs are skipped."""
    found = _complete_checkpoints(Path(run_dir) / CHECKPOINTS)
    return found[-1][1] if found else None


def load_checkpoint(
    path: Path,
    *,
    policy: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
) -> dict:
    """Restore weights, optimizer, scheduler and RNG states from `path`; return the position.

    Pass freshly built objects of the same shape as at save time (same parameters, same order);
    `optimizer` / `scheduler` may be None to restore weights only. Every file is verified
    against the COMPLETE marker first: a CorruptStateError, and nothing loaded, if one fails.
    """
    path = Path(path)
    check = verify_checkpoint(path)
    if not check.ok:
        raise CorruptStateError(f"{path} is not a complete checkpoint: {check.detail}")
    marker = _read_marker(path)
    assert marker is not None  # verified just above
    sharded = is_sharded(policy)
    _load_weights(path, policy, marker["kind"], sharded)
    if optimizer is not None:
        _load_optimizer(path, policy, optimizer, sharded)
    if scheduler is not None:
        scheduler.load_state_dict(_read_scheduler(path))
    restore_rng(torch_load(path / "rng.pt"))
    return read_json(path / "position.json")


def verify_checkpoint(path: Path) -> Check:
    """Whether `path` is a whole checkpoint: its COMPLETE marker is readable (and names this
    step, for a `step-N` directory), and every file it lists has the recorded size and sha256.
    Checkpoints saved before digests were recorded pass on their sizes, and the detail says so."""
    path = Path(path)
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
        files, digests, step = dict(marker["files"]), marker.get("sha256"), marker["step"]
    except FileNotFoundError:
        return Check(path, False, f"no {MARKER} marker (the save did not finish, or the "
                                  "directory was copied without it)")
    except (OSError, ValueError, KeyError, TypeError) as error:
        return Check(path, False, f"its {MARKER} marker is unreadable ({error})")
    named = _STEP_DIR.match(path.name)
    if named and int(named.group(1)) != step:
        return Check(path, False, f"its {MARKER} marker names step {step}")
    for name, size in files.items():
        if digests is not None and name not in digests:
            return Check(path, False, f"its {MARKER} marker has no sha256 for {name}")
        problem = file_problem(path / name, size, None if digests is None else digests[name])
        if problem is not None:
            return Check(path, False, problem)
    if digests is None:
        return Check(path, True, f"{len(files)} files at their recorded sizes (saved without "
                                 "sha256 digests, so only sizes were checked)")
    return Check(path, True, f"{len(files)} files match their sha256")


def checkpoint_step(path: Path) -> int:
    """The step number of a `step-N` checkpoint directory."""
    match = _STEP_DIR.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not a step-N checkpoint directory")
    return int(match.group(1))


# --- writers (each leaves one fsynced file in the staging directory) ---


def _is_peft(policy: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(policy, PeftModel)


def _write_weights(directory: Path, policy: nn.Module, weights: dict | None) -> str:
    if _is_peft(policy):
        from peft import get_peft_model_state_dict

        adapter = {name: tensor.detach().contiguous()
                   for name, tensor in get_peft_model_state_dict(policy, weights).items()}
        save_file(adapter, str(directory / ADAPTER_WEIGHTS))
        _fsync(directory / ADAPTER_WEIGHTS)
        return "lora"
    if weights is None:
        # save_model drops the duplicate names of tied tensors (embeddings shared with the head).
        save_model(policy, str(directory / FULL_WEIGHTS))
    else:  # gathered copies: drop the same names save_model would
        dropped = {name for group in _tied_names(policy) for name in sorted(group)[1:]}
        save_file({name: tensor.contiguous() for name, tensor in weights.items()
                   if name not in dropped}, str(directory / FULL_WEIGHTS))
    _fsync(directory / FULL_WEIGHTS)
    return "full"


def _tied_names(policy: nn.Module) -> list[list[str]]:
    """Groups of state-dict names that share one tensor (tied weights), each of 2+ names."""
    groups: dict[int, list[str]] = {}
    for name, tensor in policy.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _write_optimizer(directory: Path, optimizer: torch.optim.Optimizer,
                     state: dict[str, Any] | None) -> None:
    torch_save(optimizer.state_dict() if state is None else state, directory / "optimizer.pt")


def _write_scheduler(directory: Path, scheduler: Any) -> None:
    if scheduler is None:
        return
    state = scheduler.state_dict()
    try:
        text = json.dumps(state, allow_nan=False)
    except (TypeError, ValueError):  # tensors or callables' state: keep them as torch data
        torch_save(state, directory / "scheduler.pt")
        return
    (directory / "scheduler.json").write_text(text, encoding="utf-8")
    _fsync(directory / "scheduler.json")


def _write_rng(directory: Path) -> None:
    torch_save(capture_rng(), directory / "rng.pt")


def _write_marker(directory: Path, step: int, kind: str) -> None:
    written = [p for p in sorted(directory.iterdir()) if p.is_file()]
    files = {p.name: p.stat().st_size for p in written}
    digests = {p.name: sha256_file(p) for p in written}
    marker = {"step": step, "kind": kind, "time": time.time(), "files": files, "sha256": digests}
    (directory / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
    _fsync(directory / MARKER)
    _fsync_dir(directory)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # directories cannot be opened on Windows; rename durability is the OS's
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- publishing, discovery, pruning ---


def _publish(staging: Path, target: Path) -> None:
    """Rename the staging dir onto `target`; an existing `target` (same step) is replaced."""
    replace_dir(staging, target)
    _fsync_dir(target.parent)


def _bytes_of(policy: nn.Module, weights: dict | None, optimizer: torch.optim.Optimizer,
              optimizer_state: dict | None) -> Callable[[], int]:
    """Counts, when asked, the bytes of the tensors a checkpoint holds (its size, nearly)."""
    def count() -> int:
        if weights is not None:
            model = tensor_bytes(weights)
        elif _is_peft(policy):
            model = sum(p.nbytes for p in policy.parameters() if p.requires_grad)
        else:  # tied tensors are stored once
            model = tensor_bytes({t.data_ptr(): t for t in policy.state_dict().values()})
        state = optimizer.state_dict() if optimizer_state is None else optimizer_state
        return model + tensor_bytes(state)
    return count


def _complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and _read_marker(child) is not None:
            found.append((int(match.group(1)), child))
    return sorted(found)


def _read_marker(directory: Path) -> dict | None:
    """The COMPLETE marker when every file it lists is present at its recorded size."""
    try:
        marker = json.loads((directory / MARKER).read_text(encoding="utf-8"))
        for name, size in marker["files"].items():
            if (directory / name).stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return marker


def _prune(root: Path, keep_last: int, keep: Path) -> None:
    for _, old in _complete_checkpoints(root)[:-keep_last]:
        if old == keep:  # the checkpoint just written survives even behind a stray newer one
            continue
        # Rename first: a crash mid-delete then leaves a hidden dir, not a broken step-N.
        retired = old.with_name(f".old-{old.name}")
        os.replace(old, retired)
        shutil.rmtree(retired, ignore_errors=True)


def _remove_leftovers(root: Path) -> None:
    """Delete staging and retired dirs that a crashed save or prune left behind."""
    for child in root.iterdir():
        if child.is_dir() and child.name.startswith((".tmp-step-", ".old-step-")):
            shutil.rmtree(child, ignore_errors=True)


# --- readers ---


def _load_weights(directory: Path, policy: nn.Module, kind: str, sharded: bool) -> None:
    lora = _is_peft(policy)
    if (kind == "lora") != lora:
        wanted = "a LoRA (peft) model" if kind == "lora" else "a full model without LoRA"
        raise ValueError(f"{directory} holds {kind} weights; build {wanted} to load it into")
    if sharded:
        _load_sharded_weights(directory, policy, lora)
        return
    device = next(policy.parameters()).device
    if not lora:
        try:
            load_model(policy, str(directory / FULL_WEIGHTS), strict=True, device=str(device))
        except (RuntimeError, ValueError, KeyError) as error:
            raise ValueError(f"{directory / FULL_WEIGHTS} does not fit this model: "
                             f"{first_line(error)}") from error
        return
    from peft import set_peft_model_state_dict

    adapter = safetensors_load(directory / ADAPTER_WEIGHTS, device=str(device))
    result = set_peft_model_state_dict(policy, adapter)
    if result.unexpected_keys:
        raise ValueError(f"{directory}: adapter tensors the model does not have: "
                         f"{sorted(result.unexpected_keys)[:5]}")


def _load_sharded_weights(directory: Path, policy: nn.Module, lora: bool) -> None:
    """Read the whole tensors on this process and load them into its shards."""
    if not lora:
        weights = safetensors_load(directory / FULL_WEIGHTS)
        for group in _tied_names(policy):
            kept = sorted(group)[0]
            weights.update({name: weights[kept] for name in group if kept in weights})
        load_full_model_state(policy, weights)
        return
    from peft import get_peft_model_state_dict

    saved = safetensors_load(directory / ADAPTER_WEIGHTS)
    # peft's names in the file -> the model's own names, through peft's renaming.
    live = policy.state_dict(keep_vars=True)
    name_of = {id(tensor): name for name, tensor in live.items()}
    renamed = {saved_name: name_of[id(tensor)]
               for saved_name, tensor in get_peft_model_state_dict(policy, live).items()}
    if set(renamed) != set(saved):
        raise ValueError(f"{directory}: the adapter does not match the model's LoRA layers "
                         f"({sorted(set(renamed) ^ set(saved))[:5]})")
    load_full_model_state(policy, {renamed[name]: tensor for name, tensor in saved.items()},
                          strict=False)


def _load_optimizer(directory: Path, policy: nn.Module, optimizer: torch.optim.Optimizer,
                    sharded: bool) -> None:
    state = torch_load(directory / "optimizer.pt")
    groups = state.get("param_groups", [])
    names = [*state.get("state", {}), *(name for group in groups for name in group["params"])]
    by_name = any(isinstance(name, str) for name in names)  # else positions (state_dict())
    if by_name != sharded:
        saved, now = ("with", "without") if by_name else ("without", "with")
        raise ValueError(f"{directory} was saved {saved} train.fsdp; resume it {saved} "
                         f"train.fsdp, not {now}")
    if sharded:
        load_full_optimizer_state(policy, optimizer, state)
    else:
        optimizer.load_state_dict(state)


def _read_scheduler(directory: Path) -> dict:
    if (directory / "scheduler.json").exists():
        return read_json(directory / "scheduler.json")
    if (directory / "scheduler.pt").exists():
        return torch_load(directory / "scheduler.pt")
    raise ValueError(f"{directory} has no scheduler state (saved with scheduler=None)")
