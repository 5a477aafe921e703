"""Atomic file writes: write to a temporary file beside the target, fsync, then rename.

A crash or an exception mid-write leaves any existing file untouched and no partial file behind;
a full disk or a denied write is raised as a `storage.StorageError` naming the target.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from prefalign.storage import reporting_storage


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w",
                needed: int | None = None) -> Iterator[IO]:
    """Open a temp file in `path`'s folder for writing; rename it onto `path` on success.

    `needed`: the bytes to be written, when known, for the message of a full disk.
    """
    target = Path(path)
    # Outermost, so that the temp file is gone before the free space is measured.
    with reporting_storage(target, needed):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            encoding = None if "b" in mode else "utf-8"
            with os.fdopen(fd, mode, encoding=encoding) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_bytes_atomic(data: bytes, path: str | os.PathLike[str]) -> None:
    """Write `data` to `path`, atomically."""
    with atomic_open(path, "wb", needed=len(data)) as handle:
        handle.write(data)


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> None:
    """Write `text` as UTF-8 to `path`, atomically."""
    write_bytes_atomic(text.encode("utf-8"), path)


def write_json_atomic(obj: object, path: str | os.PathLike[str]) -> None:
    """Write `obj` as indented UTF-8 JSON, atomically."""
    write_text_atomic(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", path)


def replace_dir(staging: Path, target: Path) -> None:
    """Rename the finished directory `staging` onto `target`, replacing an existing one.

    An existing `target` is first renamed aside, so a crash leaves either the old or the new
    directory under `target`'s name (or the old one under `.old-NAME`), never a half-written one.
    """
    if target.exists():
        retired = target.with_name(f".old-{target.name}")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)
