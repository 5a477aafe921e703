"""Verified files: sha256 digests recorded when prefalign writes a file and checked before the
file is used again, so a file damaged in place (same size, other bytes) is never trusted.

Checkpoints list their digests in their COMPLETE marker, `final/` in a SHA256SUMS file in the
format `sha256sum -c` reads, and safetensors caches carry a digest of their tensors in their
metadata. A file that fails is reported as a `Check` (what, ok, why) or, where it cannot be
skipped, raised as a `CorruptStateError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

CHECKSUMS = "SHA256SUMS"
_BLOCK = 1 << 24  # bytes hashed at a time


class CorruptStateError(ValueError):
    """A file prefalign wrote (checkpoint, final model, cache, manifest) is damaged or unreadable
    and nothing verified can stand in for it; the message names the file and what to do."""


@dataclass(frozen=True)
class Check:
    """The verdict on one file or directory: `detail` says what was checked, or why it failed."""

    path: Path
    ok: bool
    detail: str


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def file_problem(path: Path, size: int | None, sha256: str | None,
                 name: str | None = None) -> str | None:
    """Why `path` does not hold the recorded size and digest (None: it does), calling the file
    `name` (default: its file name). `size` / `sha256` None skip that test."""
    name = name or path.name
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        return f"{name} is missing"
    except OSError as error:
        return f"{name} cannot be read ({error.strerror or error})"
    if size is not None and actual != size:
        return f"{name} is {actual} bytes, {size} when written (truncated or replaced)"
    if sha256 is None:
        return None
    try:
        found = sha256_file(path)
    except OSError as error:
        return f"{name} cannot be read ({error.strerror or error})"
    if found != sha256:
        return f"{name} fails its sha256 check (damaged in place; the size is unchanged)"
    return None


def write_checksums(directory: Path) -> Path:
    """Write `directory/SHA256SUMS` over every other file below it (relative POSIX paths, sorted)."""
    directory = Path(directory)
    names = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                   if p.is_file() and p.name != CHECKSUMS)
    lines = [f"{sha256_file(directory / name)}  {name}\n" for name in names]
    path = directory / CHECKSUMS
    path.write_text("".join(lines), encoding="utf-8")
    return path


def check_checksums(directory: Path) -> Check:
    """Verify every file SHA256SUMS lists; a directory without SHA256SUMS passes unverified."""
    directory = Path(directory)
    listing = directory / CHECKSUMS
    if not directory.is_dir():
        return Check(directory, False, "missing")
    if not listing.is_file():
        return Check(directory, True, f"not verified: no {CHECKSUMS} (written before prefalign "
                                      "recorded checksums)")
    try:
        entries = _parse_checksums(listing.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return Check(directory, False, f"{CHECKSUMS} is unreadable ({error})")
    for name, digest in entries.items():
        problem = file_problem(directory / name, None, digest, name)
        if problem is not None:
            return Check(directory, False, problem)
    return Check(directory, True, f"{len(entries)} files match {CHECKSUMS}")


def require_checksums(directory: Path) -> None:
    """Raise CorruptStateError when `directory`'s SHA256SUMS check fails."""
    check = check_checksums(directory)
    if not check.ok:
        raise CorruptStateError(f"{directory}: {check.detail}, so it is not used "
                                "(`prefalign verify RUN_DIR` lists what is intact)")


def _parse_checksums(text: str) -> dict[str, str]:
    entries = {}
    for number, line in enumerate(text.splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or ".." in Path(name).parts:
            raise ValueError(f"line {number} is not '<sha256>  <path>'")
        entries[name] = digest.lower()
    if not entries:
        raise ValueError("it lists no files")
    return entries
