"""The loop directory's state file, LOOPDIR/state.json: which stages of which rounds are done,
with their outputs' fingerprints, and the fingerprint of the config that made them.

A stage is done when the state file says so and its outputs still have the fingerprints
recorded when it finished; the file is rewritten atomically after each stage, so a loop
stopped any way resumes at the first stage not recorded. A done stage whose output has changed
or gone is an error (its later stages were made from it), as is resuming under a config with
another fingerprint. `rounds` is not part of the fingerprint (a finished loop can be given more),
nor are the directory's name and place.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefalign import __version__
from prefalign.atomic import write_json_atomic
from prefalign.config import ConfigError
from prefalign.engine.manifest import utc_now
from prefalign.loop.lineage import file_sha256

STATE = "state.json"
FORMAT = "prefalign-loop/1"


class LoopStateError(ConfigError):
    """A loop directory that cannot be continued as asked (see the module docstring)."""


@dataclass
class LoopState:
    """The state file's content: `stages[round][stage]` -> {"outputs": {path: sha256}, ...}."""

    loop_dir: Path
    fingerprint: str
    config: dict[str, Any]
    stages: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.loop_dir / STATE

    def done(self, round_: int, stage: str) -> bool:
        """Whether the stage finished; LoopStateError when an output it recorded changed."""
        entry = self.stages.get(str(round_), {}).get(stage)
        if entry is None:
            return False
        for name, recorded in entry["outputs"].items():
            path = self.loop_dir / name
            found = output_fingerprint(path) if path.exists() else None
            if found != recorded:
                what = "is gone" if found is None else f"has changed (sha256 {found})"
                raise LoopStateError(
                    f"{path}: round {round_}'s {stage} stage recorded it with sha256 {recorded} "
                    f"but it {what}; later stages were made from it. Restore it, or start a "
                    f"new loop (another name)")
        return True

    def finish(self, round_: int, stage: str, outputs: list[Path],
               details: Mapping[str, Any] | None = None) -> None:
        """Record the stage as done with its outputs' fingerprints; write the file."""
        self.stages.setdefault(str(round_), {})[stage] = {
            "outputs": {path.relative_to(self.loop_dir).as_posix(): output_fingerprint(path)
                        for path in outputs},
            "finished_at": utc_now(), **dict(details or {})}
        self.write()

    def write(self) -> None:
        write_json_atomic({"format": FORMAT, "prefalign": __version__,
                           "config_fingerprint": self.fingerprint, "config": self.config,
                           "stages": self.stages}, self.path)


def config_fingerprint(identity: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of what decides the loop's outputs."""
    text = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def open_state(loop_dir: Path, identity: dict[str, Any], resume: bool) -> LoopState:
    """A new state for an empty (or missing) directory, or the recorded one under `resume`;
    LoopStateError for a loop directory without --resume, a non-loop directory, or a loop made
    from another config."""
    fingerprint = config_fingerprint(identity)
    path = loop_dir / STATE
    if not path.is_file():
        if loop_dir.exists() and any(loop_dir.iterdir()):
            raise LoopStateError(f"{loop_dir}: exists and is not a loop directory (no {STATE}); "
                                 f"choose another name or output_dir")
        return LoopState(loop_dir, fingerprint, identity)
    if not resume:
        raise LoopStateError(f"{loop_dir}: holds a loop already; pass --resume to continue it, "
                             f"or choose another name")
    recorded = _read(path)
    if recorded.get("config_fingerprint") != fingerprint:
        raise LoopStateError(
            f"{loop_dir}: was made from another config (differs in: "
            f"{', '.join(_differences(recorded.get('config', {}), identity)) or '?'}); it "
            f"resumes only under the config that made it (more rounds allowed). Choose another "
            f"name for a new loop")
    return LoopState(loop_dir, fingerprint, identity, recorded.get("stages", {}))


def output_fingerprint(path: Path) -> str:
    """A file's sha256; for a directory, sha256 over its files' relative paths and sha256s."""
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path).as_posix()}\0{file_sha256(item)}\n".encode())
    return digest.hexdigest()


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise LoopStateError(f"{path}: cannot read the loop's state: {error}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LoopStateError(f"{path}: not a {FORMAT} state file")
    return data


def _differences(recorded: Mapping[str, Any], current: Mapping[str, Any],
                 prefix: str = "") -> list[str]:
    """The dotted keys whose values differ, as deep as both sides are mappings."""
    found = []
    for key in sorted(set(recorded) | set(current)):
        a, b = recorded.get(key), current.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}")
    return found
