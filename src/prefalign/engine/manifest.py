"""The run's audit record, `run_dir/manifest.json`: what was trained, on what, with what, and how
it ended (seed document 000: record data version, prompt template, policy version and settings).

Keys: schema_version, outcome, started_at, finished_at, resumes [{time, from_step}], config (the
full resolved Config), the sections the loop passes (data fingerprints, chat template, model
source and weight hash, reference strategy, loss, seed, ...), and environment (library versions,
code version, hostname, platform). Times are UTC ISO 8601. Every write is atomic.
"""

from __future__ import annotations

import json
import math
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from prefalign.atomic import write_json_atomic
from prefalign.config import Config
from prefalign.integrity import CorruptStateError
from prefalign.storage import StorageError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
OUTCOMES = ("running", "completed", "early_stopped", "interrupted", "failed")
LIBRARIES = ("torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers",
             "numpy", "prefalign")
_RESERVED = ("schema_version", "outcome", "started_at", "finished_at", "resumes", "config",
             "environment")


def start_manifest(
    run_dir: Path, config: Config, *, resume_step: int | None = None, **sections: Any
) -> dict:
    """Write a "running" manifest with the start time, config, sections and environment.

    With `resume_step` (the step of the checkpoint being resumed) the existing manifest is kept:
    its start time and history stay, a {time, from_step} entry is appended to `resumes`, the
    outcome goes back to "running", and config, sections and environment are refreshed.
    """
    _check_names(sections)
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "outcome": "running",
        "started_at": utc_now(),
        "finished_at": None,
        "resumes": [],
    }
    path = Path(run_dir) / MANIFEST
    if resume_step is not None:
        resume: dict[str, Any] = {"time": utc_now(), "from_step": resume_step}
        if path.exists():
            manifest.update(read_manifest(run_dir))
            if manifest.get("config") != _jsonable(config.to_dict()):
                resume["config_changed"] = True  # the previous config is overwritten below
        manifest["resumes"] = [*manifest.get("resumes", []), resume]
        manifest.update(outcome="running", finished_at=None)
    manifest["config"] = config.to_dict()
    manifest.update(sections)
    manifest["environment"] = environment()
    return _write(run_dir, manifest)


def update_manifest(run_dir: Path, **fields: Any) -> dict:
    """Set top-level `fields` (a field's old value is replaced, not merged) and rewrite."""
    manifest = read_manifest(run_dir)
    manifest.update(fields)
    return _write(run_dir, manifest)


def finish_manifest(run_dir: Path, outcome: str, **fields: Any) -> dict:
    """Record the end time and outcome: completed, early_stopped, interrupted, "failed: REASON"."""
    kind = outcome.split(":", 1)[0]
    if kind not in OUTCOMES or kind == "running":
        raise ValueError(f"outcome must be completed, early_stopped, interrupted or "
                         f"'failed: <reason>', got {outcome!r}")
    return update_manifest(run_dir, outcome=outcome, finished_at=utc_now(), **fields)


def record_failure(run_dir: Path, error: BaseException) -> dict | None:
    """Finish the manifest as "interrupted" (KeyboardInterrupt) or "failed: REASON" and return
    it; when even that write fails (the disk is full), say so on stderr instead of hiding
    `error`, and return None."""
    if isinstance(error, KeyboardInterrupt):
        outcome = "interrupted"
    elif isinstance(error, CorruptStateError | StorageError):  # their messages name the file
        outcome = f"failed: {error}"
    else:
        outcome = f"failed: {type(error).__name__}: {error}"
    try:
        return finish_manifest(run_dir, outcome)
    except (OSError, ValueError) as failure:
        print(f"prefalign: could not record the outcome in {Path(run_dir) / MANIFEST}: "
              f"{failure}", file=sys.stderr)
        return None


def read_manifest(run_dir: Path) -> dict:
    """The manifest of `run_dir` as a dict; CorruptStateError when it is not a JSON object."""
    path = Path(run_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise CorruptStateError(f"{path} is not readable JSON ({error}); a resume without it "
                                "(moved aside) starts a new one") from error
    if not isinstance(manifest, dict):
        raise CorruptStateError(f"{path} does not hold a JSON object")
    return manifest


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second ("2025-01-31T12:00:00+00:00")."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def environment() -> dict[str, Any]:
    """Library versions, code version, hostname and platform of this process."""
    return {
        "python": platform.python_version(),
        "libraries": library_versions(),
        "code": code_version(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
    }


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape a run (None when not installed)."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def code_version() -> dict[str, Any]:
    """The package version, plus git commit and dirty flag when prefalign runs from a checkout."""
    import prefalign

    version: dict[str, Any] = {"package": prefalign.__version__, "git_commit": None,
                               "git_dirty": None}
    package_dir = Path(prefalign.__file__).resolve().parent
    # Only a checkout that tracks this very package counts (not a venv inside some other repo).
    if _git(package_dir, "ls-files", "--error-unmatch", "__init__.py") is None:
        return version
    version["git_commit"] = _git(package_dir, "rev-parse", "HEAD")
    status = _git(package_dir, "status", "--porcelain")
    version["git_dirty"] = None if status is None else bool(status.strip())
    return version


def _git(cwd: Path, *args: str) -> str | None:
    """stdout of a git command, or None when git is missing, fails or hangs."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _check_names(sections: Mapping[str, Any]) -> None:
    clashes = sorted(set(sections) & set(_RESERVED))
    if clashes:
        raise ValueError(f"manifest sections may not be named {clashes}; they are set here")


def _write(run_dir: Path, manifest: dict) -> dict:
    plain = _jsonable(manifest)
    write_json_atomic(plain, Path(run_dir) / MANIFEST)
    return plain


def _jsonable(value: Any) -> Any:
    """Plain JSON types: paths, dtypes and other objects become strings, tuples lists; a
    non-finite float becomes its string ("nan", "inf") so the file stays strict JSON."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_jsonable(v) for v in items]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _jsonable(value.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)
