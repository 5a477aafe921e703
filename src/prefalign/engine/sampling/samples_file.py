"""A samples file, SAMPLES.jsonl, and its manifest beside it, SAMPLES.jsonl.manifest.json.

Each prompt's rows (one per sample) are appended with one write and an fsync, so after a kill
the file holds whole prompts plus at most one prompt's rows cut short. Reopening the file for
the same job cuts that tail off and reports which prompts are done, so a restarted job goes on
where it stopped, never writing a prompt twice or leaving one out. The manifest records what
decides the samples (`identity`: the model's weight hash, the chat template, the settings, the
prompt file's sha256, the stop tokens); reopening refuses a job whose identity differs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefalign.atomic import write_json_atomic
from prefalign.engine.manifest import environment, utc_now

FORMAT = "prefalign-samples/1"


class SamplesFileError(ValueError):
    """A samples file that cannot be resumed: another job's, or damaged."""


def manifest_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f"{path.name}.manifest.json")


class SamplesFile:
    """An open samples file: `done` holds the ids of the prompts whose rows are all there."""

    def __init__(self, path: Path, manifest: dict[str, Any], done: set[str]) -> None:
        self.path = path
        self.manifest = manifest
        self.done = done
        self.resumed = len(done)
        self._handle = open(path, "ab")  # closed by close()

    @classmethod
    def open(cls, path: str | Path, identity: Mapping[str, Any],
             details: Mapping[str, Any] | None = None) -> SamplesFile:
        """Start the file and its manifest, or reopen them for the same job (see module).
        `details` (where the model and prompts were read from, ...) are recorded at the start
        but not compared: the same job may read them from elsewhere."""
        path = Path(path)
        manifest_file = manifest_path(path)
        if not manifest_file.is_file():
            if path.exists() and path.stat().st_size > 0:
                raise SamplesFileError(
                    f"{path}: exists but has no manifest ({manifest_file.name}), so it cannot "
                    f"be resumed; choose another output file or remove it")
            manifest = {"format": FORMAT, **identity, **(details or {}), "created": utc_now(),
                        "finished": None, "environment": environment()}
            write_json_atomic(manifest, manifest_file)
            path.touch()
            return cls(path, manifest, set())
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        differences = identity_differences(manifest, identity)
        if differences:
            raise SamplesFileError(
                f"{path}: was written by another job, so it is not resumed; it differs in\n  "
                + "\n  ".join(differences)
                + "\nchoose another output file, or remove this one and its manifest")
        num_samples = identity["settings"]["num_samples"]
        return cls(path, manifest, recover(path, num_samples))

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append one prompt's rows with one write, flushed to disk before returning."""
        data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        self._handle.write(data.encode("utf-8"))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.done.add(str(rows[0]["prompt_id"]))

    def finish(self, **fields: Any) -> None:
        """Record in the manifest that every prompt is done."""
        self.manifest.update(finished=utc_now(), **fields)
        write_json_atomic(self.manifest, manifest_path(self.path))

    def close(self) -> None:
        self._handle.close()


def identity_differences(manifest: Mapping[str, Any], identity: Mapping[str, Any],
                         prefix: str = "") -> list[str]:
    """'key: X in the manifest, Y now' for every identity value the manifest records otherwise
    (nested sections are compared key by key)."""
    differences = []
    for key, value in identity.items():
        recorded = manifest.get(key)
        if isinstance(value, Mapping) and isinstance(recorded, Mapping):
            differences += identity_differences(recorded, value, f"{prefix}{key}.")
        elif recorded != value:
            differences.append(f"{prefix}{key}: {_short(recorded)} in the manifest, "
                               f"{_short(value)} now")
    return differences


def _short(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def recover(path: Path, num_samples: int) -> set[str]:
    """The prompts whose `num_samples` rows are all in the file; the rows after the last such
    prompt (a prompt cut short by a kill) are truncated away. A damaged row before that point,
    or a prompt with too many rows, is a SamplesFileError naming the line."""
    done: set[str] = set()
    counts: dict[str, int] = {}
    keep = position = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            position += len(line)
            if not line.endswith(b"\n"):
                break  # the last line, cut short mid-write
            prompt_id = _row_prompt_id(path, number, line)
            counts[prompt_id] = counts.get(prompt_id, 0) + 1
            if prompt_id in done or counts[prompt_id] > num_samples:
                raise SamplesFileError(f"{path}:{number}: more than {num_samples} rows for "
                                       f"prompt {prompt_id!r}; the file is damaged")
            if counts[prompt_id] == num_samples:
                done.add(prompt_id)
                keep = position
    if os.path.getsize(path) > keep:
        with open(path, "r+b") as handle:
            handle.truncate(keep)
            os.fsync(handle.fileno())
    return done


def _row_prompt_id(path: Path, number: int, line: bytes) -> str:
    try:
        row = json.loads(line)
        return str(row["prompt_id"])
    except (ValueError, KeyError, TypeError):
        raise SamplesFileError(f"{path}:{number}: not a sample row (JSON with a prompt_id); "
                               f"the file is damaged") from None
