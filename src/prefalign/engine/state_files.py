"""Writing and reading the files a run keeps between processes (checkpoints): torch files
(written through a Python file, read back weights_only), safetensors and JSON.

A file that cannot be parsed is raised as a `CorruptStateError` naming it, not as the
library's own error; a failed write keeps the OSError with its errno in the exception's
context, so that `storage.storage_error` can tell a full disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from prefalign.integrity import CorruptStateError


def torch_save(obj: Any, path: Path) -> None:
    """`torch.save` to `path`, flushed and fsynced."""
    # Through a Python file: given a path, torch's writer drops the failed write's OSError.
    with open(path, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def torch_load(path: Path) -> Any:
    """`torch.load(weights_only=True)` onto the CPU: nothing is unpickled."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise unreadable(path, error) from error


def safetensors_load(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device=device)
    except Exception as error:
        raise unreadable(path, error) from error


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise unreadable(path, error) from error


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in nested dicts, lists and tuples (a state dict's size, nearly)."""
    if isinstance(value, torch.Tensor):
        return value.nbytes
    if isinstance(value, dict):
        return sum(tensor_bytes(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(tensor_bytes(item) for item in value)
    return 0


def unreadable(path: Path, error: BaseException) -> CorruptStateError:
    """A CorruptStateError naming `path` and the first line of what the library said."""
    return CorruptStateError(f"{path} cannot be read ({type(error).__name__}: "
                             f"{first_line(error)})")


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__
