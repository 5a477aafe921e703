"""The run directory's claim: one process at a time, nothing left behind by a run that never
started, and a finished run left as it is.

- `RunLock`: an exclusive `flock` on `run_dir/.lock`, held by the main process from before the
  directory is checked until the run ends. The kernel drops it when the process dies (even by
  kill -9), so a stale lock never blocks a later run. A second process on the same directory
  stops with a message naming the holder's pid. (No-op where `fcntl` is missing: Windows.)
- `remove_unstarted`: a directory this call created is removed when opening the run fails
  (bad data, a model that does not load), so a failed start leaves nothing behind.
- `finished_outcome`: `--resume` of a run whose manifest says it completed (or stopped early)
  under the same resolved config changes nothing and says so. (With another config, say more
  `train.max_steps`, the run continues from its last checkpoint, as any resume.)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from prefalign.config import ConfigError
from prefalign.engine.manifest import MANIFEST, read_manifest

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK = ".lock"
FINISHED = ("completed", "early_stopped")


class RunDirError(ConfigError):
    """The run directory holds another run, is in use, or has a checkpoint this config cannot
    continue."""


class RunFinished(Exception):
    """`--resume` of a run that already finished; carries its manifest."""

    def __init__(self, run_dir: Path, manifest: dict[str, Any]):
        self.run_dir, self.manifest = run_dir, manifest
        super().__init__(f"{run_dir} already finished ({manifest.get('outcome')} after "
                         f"{manifest.get('steps', '?')} step(s)); nothing to resume, nothing "
                         "changed")


class RunLock:
    """An exclusive lock on a run directory (see the module docstring)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if fcntl is None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunDirError(f"{self.path.parent} is in use by another prefalign process (pid "
                              f"{holder}); wait for it to end or choose another run.name") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def claim(run_dir: Path) -> tuple[RunLock, bool]:
    """Create `run_dir` if needed and lock it; (the lock, whether this call created it)."""
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return RunLock(run_dir).acquire(), created
    except BaseException:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def remove_unstarted(run_dir: Path, created: bool) -> None:
    """Remove a run directory this call created and no run has started in (no manifest)."""
    if created and not (run_dir / MANIFEST).exists():
        shutil.rmtree(run_dir, ignore_errors=True)


def finished_outcome(run_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of a run that finished under `config` (its resolved dict), or None."""
    if not (run_dir / MANIFEST).is_file():
        return None
    manifest = read_manifest(run_dir)  # CorruptStateError names a damaged one
    same = manifest.get("config") == json.loads(json.dumps(config))
    return manifest if manifest.get("outcome") in FINISHED and same else None
