"""On-disk cache of loaded and tokenised pairs, so a second run skips reading and tokenising.

An entry is `cache_root()/tokenized/<sha256 of the key>/`: the arrays of
`prefalign.data.token_arrays` (memory-mapped when read), `meta.json` (the key, the counts and
warnings of loading and tokenising, the loader's summary, and each file's sha256) and, when the
loader kept skipped records aside, `rejects.jsonl`. The key names everything that decides the
result: each source's path (it is in every pair's provenance) and a sha256 of its bytes, the load
options, the tokenizer (vocabulary, specials, chat template; not its path), the truncation
options, whether rejects were kept, and the versions of prefalign's tokenising code and of
transformers and tokenizers. An entry is written into a temporary directory and renamed into
place, so readers never see half of one; one whose files fail their checksum or do not fit
together is reported in one line, removed and rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefalign.atomic import atomic_open, write_json_atomic
from prefalign.data.load import LoadOptions
from prefalign.data.token_arrays import ARRAY_FILES, open_store, write_store
from prefalign.data.tokenize import TOKENIZE_VERSION, TokenizedPair, TruncationOptions
from prefalign.data.tokenizer import cache_root, tokenizer_identity
from prefalign.data.types import PreferencePair

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

CACHE_VERSION = "prefalign-token-cache-v1"  # bump when an entry's layout or meaning changes
_META = "meta.json"
_REJECTS = "rejects.jsonl"
# Stands for the rejects file's path in stored warnings: each run keeps its rejects elsewhere.
_REJECTS_MARK = "\x00rejects-path\x00"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class TokenizedData:
    """Pairs after loading and tokenising, before any ordering: `pairs[i]` is what
    `tokenized[i]` encodes. counts: loaded, dropped_overflow, prompt_truncated,
    response_truncated. summary: the loader's one-line account (for "nothing left" errors)."""

    pairs: Sequence[PreferencePair]
    tokenized: Sequence[TokenizedPair]
    counts: dict[str, int]
    warnings: list[str]
    summary: str


@dataclass(frozen=True)
class CacheOutcome:
    """Which entry a split used (`key`: its sha256) and whether it was already there."""

    key: str
    hit: bool

    def describe(self) -> dict[str, object]:
        return {"key": self.key, "hit": self.hit}


def token_cache_key(
    sources: Sequence[Path], load: LoadOptions, tokenizer: PreTrainedTokenizerBase,
    truncation: TruncationOptions, keeps_rejects: bool,
) -> dict[str, Any] | None:
    """The key of these sources tokenised this way; None when a source is not a readable file
    (loading reports that, and there is nothing to cache)."""
    try:
        files = [{"path": str(path), "size": path.stat().st_size, "sha256": _file_sha256(path)}
                 for path in sources]
    except OSError:
        return None
    identity = tokenizer_identity(tokenizer)
    identity.pop("name_or_path")  # a path: the same tokenizer elsewhere gives the same ids
    return {
        "version": CACHE_VERSION, "tokenize": TOKENIZE_VERSION, "libraries": _library_versions(),
        "sources": files,
        "load": {"format": load.format, "on_error": load.on_error,
                 "preference_axis": load.preference_axis, "dedupe": load.dedupe},
        "tokenizer": identity,
        "truncation": {"max_length": truncation.max_length,
                       "max_prompt_length": truncation.max_prompt_length,
                       "on_overflow": truncation.on_overflow},
        "keeps_rejects": keeps_rejects,
    }


def _library_versions() -> dict[str, str]:
    import prefalign  # its own version: also known when run from a checkout, uninstalled

    return {"prefalign": prefalign.__version__,
            **{name: importlib.metadata.version(name) for name in ("transformers", "tokenizers")}}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _digest(key: dict[str, Any]) -> str:
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def entry_dir(key: dict[str, Any]) -> Path:
    """`cache_root()/tokenized/<sha256(key)>`."""
    return cache_root() / "tokenized" / _digest(key)


def cached_tokenize(
    key: dict[str, Any], build: Callable[[Path | None], TokenizedData], rejects: Path | None
) -> tuple[TokenizedData, CacheOutcome]:
    """The entry for `key`, or `build(rejects)` stored as one first.

    A hit restores the stored rejects file to `rejects`. After a miss the split reads the entry
    it just wrote, so both runs go on with the same memory-mapped pairs; when the entry cannot
    be written (read-only cache, full disk) the built pairs are used as they are.
    """
    directory = entry_dir(key)
    found = read_entry(directory, key)
    if found is not None:
        if rejects is not None and (directory / _REJECTS).is_file():
            _copy_atomic(directory / _REJECTS, rejects)
        return _with_rejects_path(found, rejects), CacheOutcome(directory.name, hit=True)
    built = build(rejects)
    stored = read_entry(directory, key) if write_entry(directory, key, built, rejects) else None
    result = _with_rejects_path(stored, rejects) if stored is not None else built
    return result, CacheOutcome(directory.name, hit=False)


def read_entry(directory: Path, key: dict[str, Any]) -> TokenizedData | None:
    """The entry in `directory` if it is complete and made for `key`, else None.

    A damaged entry (no or unreadable meta.json, a failed checksum, arrays that do not fit,
    another key) is removed with a one-line warning, so the caller rebuilds it. Its warnings
    still hold the mark that stands for the rejects path.
    """
    if not directory.exists():
        return None
    try:
        meta = json.loads((directory / _META).read_text(encoding="utf-8"))
        _verify(directory, meta, key)
        pairs, tokenized = open_store(directory, int(meta["count"]))
        return TokenizedData(pairs, tokenized, dict(meta["counts"]), list(meta["warnings"]),
                             str(meta["summary"]))
    except Exception as error:  # any damage means: rebuild, never use part of it
        logger.warning("token cache %s unusable (%s: %s); rebuilding it",
                       directory, type(error).__name__, error)
        shutil.rmtree(directory, ignore_errors=True)
        return None


def _verify(directory: Path, meta: dict[str, Any], key: dict[str, Any]) -> None:
    if meta.get("key") != key:
        raise ValueError("made for another key")
    for name, expected in meta["sha256"].items():
        if _file_sha256(directory / name) != expected:
            raise ValueError(f"{name} fails its checksum")
    missing = {f"{name}.npy" for name in ARRAY_FILES} - set(meta["sha256"])
    if missing:
        raise ValueError(f"no checksum for {sorted(missing)}")


def _with_rejects_path(data: TokenizedData, rejects: Path | None) -> TokenizedData:
    where = str(rejects) if rejects is not None else ""
    warnings = [warning.replace(_REJECTS_MARK, where) for warning in data.warnings]
    return TokenizedData(data.pairs, data.tokenized, data.counts, warnings, data.summary)


def write_entry(
    directory: Path, key: dict[str, Any], data: TokenizedData, rejects: Path | None
) -> bool:
    """Store `data` (and the rejects file the build wrote) as `directory`; False when it
    cannot be written. Never leaves a partial entry: the files are written beside it first."""
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name[:16]}.", dir=directory.parent))
    except OSError as error:
        logger.warning("cannot write the token cache under %s: %s", directory.parent, error)
        return False
    try:
        _fill(staging, key, data, rejects)
        os.rename(staging, directory)
        return True
    except Exception as error:  # a cache that cannot be written only costs speed
        if (directory / _META).is_file():
            return True  # another process stored the same entry first
        logger.warning("could not store the token cache at %s (%s: %s)", directory,
                       type(error).__name__, error)
        return False
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fill(staging: Path, key: dict[str, Any], data: TokenizedData, rejects: Path | None) -> None:
    write_store(staging, data.pairs, data.tokenized)
    if rejects is not None and rejects.is_file():
        shutil.copyfile(rejects, staging / _REJECTS)
    where = str(rejects) if rejects is not None else None
    warnings = [w.replace(where, _REJECTS_MARK) if where else w for w in data.warnings]
    checksums = {path.name: _file_sha256(path) for path in sorted(staging.iterdir())}
    for path in staging.iterdir():
        _fsync(path)
    write_json_atomic({"key": key, "count": len(data.tokenized), "counts": data.counts,
                       "warnings": warnings, "summary": data.summary, "sha256": checksums},
                      staging / _META)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_atomic(source: Path, target: Path) -> None:
    with source.open("rb") as reader, atomic_open(target, "wb") as writer:
        shutil.copyfileobj(reader, writer)
