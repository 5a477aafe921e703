"""Failed writes as one-line errors: a full disk, a missing permission, a read-only file system.

The libraries prefalign writes through report a full disk in their own ways: Python as
`OSError(ENOSPC)`, safetensors as `SafetensorError("... No space left on device (os error 28)")`,
torch's zip writer as `RuntimeError("... unexpected pos 11456 vs 11348")` with the OSError, if
any, only in the exception's context. `storage_error` recognises all of them (the last by that
context, or else by the free space left on the file system after the failure) and returns a
`StorageError` whose message names the path and, where the caller knows it, the bytes needed.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
DENIED = frozenset({errno.EACCES, errno.EPERM})
_FULL_TEXT = re.compile(r"No space left on device|Disk quota exceeded|os error (28|122)\b")


class StorageError(OSError):
    """A write that failed for want of space or permission; `str()` is the message to show.

    `disk_full` tells a full disk (the run stopped on an environment failure: exit 1) from a
    path that cannot be written at all (denied or read-only: a usage error, exit 2).
    """

    def __init__(self, code: int, message: str, path: str | os.PathLike[str] | None):
        super().__init__(code, message)
        self.filename = None if path is None else str(path)
        self.message = message

    @property
    def disk_full(self) -> bool:
        return self.errno in FULL

    def __str__(self) -> str:
        return self.message


def storage_error(error: BaseException, path: str | os.PathLike[str] | None,
                  needed: int | None = None) -> StorageError | None:
    """`error` as a StorageError about writing `path` when it is a full disk, a denied
    permission or a read-only file system; None for any other error. `needed`: bytes the
    write needed. Without `path` the error's own file name is used, read or written."""
    if isinstance(error, StorageError):
        return error
    code = _errno_in_chain(error)
    where = path if path is not None else getattr(error, "filename", None)
    named = "" if where is None else f" {'writing' if path is not None else 'on'} {where}"
    if code in DENIED:
        return StorageError(code, f"permission denied{named}", where)
    if code == errno.EROFS:
        return StorageError(code, f"read-only file system{named}", where)
    if code in FULL or _FULL_TEXT.search(str(error)) or _looks_full(where, needed):
        return StorageError(errno.ENOSPC, disk_full_message(where, needed), where)
    return None


@contextmanager
def reporting_storage(path: str | os.PathLike[str],
                      needed: int | Callable[[], int] | None = None) -> Iterator[None]:
    """Turn a full disk or a denied write inside the block into a StorageError about `path`.

    `needed`: the bytes the block writes, or a function that counts them (called on failure).
    """
    try:
        yield
    except Exception as error:
        found = storage_error(error, path, needed() if callable(needed) else needed)
        if found is None or found is error:
            raise
        raise found from error


def disk_full_message(path: str | os.PathLike[str] | None, needed: int | None) -> str:
    """"no space left on device writing PATH: needed about N bytes, F bytes free"."""
    details = []
    if needed is not None:
        details.append(f"needed about {human_bytes(needed)}")
    free = free_bytes(path)
    if free is not None:
        details.append(f"{human_bytes(free)} free")
    suffix = f": {', '.join(details)}" if details else ""
    return f"no space left on device writing {path}{suffix}"


def free_bytes(path: str | os.PathLike[str] | None) -> int | None:
    """Bytes free to an unprivileged writer on the file system of `path` (or its nearest
    existing parent); None when it cannot be told."""
    if path is None:
        return None
    candidate = Path(path)
    while not candidate.exists() and candidate != candidate.parent:
        candidate = candidate.parent
    try:
        return shutil.disk_usage(candidate).free
    except OSError:
        return None


def human_bytes(count: int) -> str:
    """"532 bytes", "11,456 bytes (11.2 KiB)", "1,288,490,188 bytes (1.2 GiB)"."""
    if count < 1024:
        return f"{count} bytes"
    value, units = count / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    return f"{count:,} bytes ({value:.1f} {units[0]})"


def _errno_in_chain(error: BaseException) -> int | None:
    """The errno of the first OSError among `error`, its cause and its context."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current.errno
        current = current.__cause__ or current.__context__
    return None


def _looks_full(path: str | os.PathLike[str] | None, needed: int | None) -> bool:
    """torch's writer drops the errno: a failed write of `needed` bytes onto a file system
    with less than that free is taken for a full disk."""
    if needed is None:
        return False
    free = free_bytes(path)
    return free is not None and free < needed
