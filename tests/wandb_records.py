"""Read what an offline W&B run recorded: its `run-ID.wandb` transaction log, parsed with wandb's
own protobuf messages.

The file is a 7-byte header (":W&B", a 2-byte magic, a version byte) followed by LevelDB's log
format: 32 KiB blocks of chunks, each a 7-byte header (crc32c, length, type) and its bytes; a
record is one FULL chunk or a FIRST, MIDDLE..., LAST run of them, and a block's last < 7 bytes are
padding. wandb no longer ships a Python reader for it (wandb-core, in Go, writes it).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HEADER = 7
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """The parts of an offline run the tests look at."""

    run_id: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per step, "_step" in it
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    exit_code: int | None = None


def records(path: Path) -> list[Any]:
    """Every record of the transaction log at `path`, as wandb_internal_pb2.Record messages."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log")
    found, pieces, position = [], [], _HEADER
    while position + _HEADER <= len(data):
        left_in_block = _BLOCK - position % _BLOCK
        if left_in_block < _HEADER:  # padding at the end of a block
            position += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position:position + _HEADER])
        if kind == 0 and length == 0:  # zero fill after the last record of a block
            position += left_in_block
            continue
        start = position + _HEADER
        pieces.append(data[start:start + length])
        position = start + length
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(pieces))
            found.append(record)
            pieces = []
    return found


def read_offline_run(run_dir: Path) -> OfflineRun:
    """The config, history, summary, saved files and exit code of one offline-run directory."""
    (log,) = Path(run_dir).glob("run-*.wandb")
    run = OfflineRun()
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id
            run.config.update(_items(record.run.config.update))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "summary":
            run.summary.update({k: v for k, v in _items(record.summary.update).items() if k})
        elif kind == "files":
            run.files.extend(item.path for item in record.files.files)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    run.config.pop("_wandb", None)
    return run


def _items(items: Any) -> dict[str, Any]:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def offline_runs(wandb_dir: Path, run_id: str) -> list[Path]:
    """The offline-run directories of `run_id` under WANDB_DIR, oldest first."""
    return sorted((Path(wandb_dir) / "wandb").glob(f"offline-run-*-{run_id}"))
