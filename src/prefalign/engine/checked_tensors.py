"""Small safetensors files that carry a sha256 of their own tensors in their metadata, so that
numbers damaged in place (same size, other bytes) are told from good ones before any is used.

Used for what the trainers keep between runs: the precomputed reference log-probs and the
step-0 held-out log-probs of reference-free runs. The digest is `weight_hash` of the tensors
(name, dtype, shape and bytes of each).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from prefalign.atomic import write_bytes_atomic
from prefalign.engine.models.load import weight_hash

CHECKSUM_FIELD = "prefalign_sha256"


def write_checked(path: Path, tensors: dict[str, torch.Tensor],
                  metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (contiguous, CPU) with their digest and `metadata`, atomically."""
    payload = save(tensors, metadata={**(metadata or {}), CHECKSUM_FIELD: weight_hash(tensors)})
    write_bytes_atomic(payload, path)


def read_metadata(path: Path) -> dict[str, str]:
    """The file's metadata; raises safetensors' own errors for a damaged header."""
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


def read_checked(path: Path, names: Collection[str],
                 size: int | None) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """The file's tensors, or None and why they cannot be used: missing, unreadable, other
    names than `names` or other shapes than (size,) each (one common length for None), no
    digest, or a digest that the numbers fail."""
    if not path.is_file():
        return None, "missing"
    try:
        expected = read_metadata(path).get(CHECKSUM_FIELD)
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for damaged files
        return None, f"unreadable ({type(error).__name__}: {error})"
    lengths = {tuple(t.shape) for t in tensors.values()}
    wanted = {(size,)} if size is not None else lengths
    if set(tensors) != set(names) or lengths != wanted or len(lengths) != 1:
        shapes = {name: tuple(t.shape) for name, t in tensors.items()}
        length = "N" if size is None else size
        return None, f"expected tensors {sorted(names)} of shape ({length},), found {shapes}"
    if expected is None:
        return None, "it has no checksum (written before prefalign recorded one)"
    if weight_hash(tensors) != expected:
        return None, "its numbers fail their sha256 check (damaged in place)"
    return tensors, None
