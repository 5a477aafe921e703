"""Writing preference pairs back out as records of a format, atomically.

Each written record also carries the pair's record id (as `id`) and its metadata as top-level
fields, so reading the file again gives the same pairs with the same labels.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prefalign.atomic import atomic_open
from prefalign.data.types import Message, PreferencePair

WRITE_FORMATS = ("trl", "trl_text", "accepted_rejected")
DEFAULT_SYSTEM = "CUSTOM"
# Keys that decide format detection: metadata under these names would make the output unreadable.
RESERVED_KEYS = frozenset({
    "Template", "User", "Accepted", "Rejected", "prompt", "chosen", "rejected",
    "response_0", "response_1", "better_response_id", "safer_response_id", "id",
})


def to_record(pair: PreferencePair, fmt: str) -> dict[str, object]:
    """The pair as one record of `fmt` (see WRITE_FORMATS); ValueError if it cannot be expressed.

    trl: conversational (prompt messages; chosen/rejected one assistant message each).
    trl_text: three strings; only for a prompt that is a single user message.
    accepted_rejected: Template/User/Accepted/Rejected with the history's assistant turns in both
    Accepted and Rejected and the preference at the last index; needs alternating turns.
    """
    if fmt == "trl":
        record = {
            "prompt": pair.prompt_dicts(),
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}],
        }
    elif fmt == "trl_text":
        record = _trl_text(pair)
    elif fmt == "accepted_rejected":
        record = _accepted_rejected(pair)
    else:
        raise ValueError(f"cannot write format {fmt!r}; choose one of {list(WRITE_FORMATS)}")
    return {**_labels(pair, fmt), **record}


def _labels(pair: PreferencePair, fmt: str) -> dict[str, str]:
    """The record id and metadata as top-level fields of the written record."""
    origin = pair.provenance
    labels = {k: v for k, v in origin.metadata if k not in RESERVED_KEYS}
    if origin.record_id is not None:
        # A multi-turn Accepted/Rejected record yields one pair per turn: the turn keeps ids unique,
        # except in accepted_rejected output, where reading back restores the turn itself.
        labels["id"] = origin.record_id if fmt == "accepted_rejected" else origin.pair_id
    return labels


def _trl_text(pair: PreferencePair) -> dict[str, object]:
    if len(pair.prompt) != 1 or pair.prompt[0].role != "user":
        raise ValueError(f"pair {pair.provenance.pair_id}: trl_text needs a prompt of one user "
                         f"message, got roles {_roles(pair.prompt)}; write it as trl instead")
    return {"prompt": pair.prompt[0].content, "chosen": pair.chosen, "rejected": pair.rejected}


def _accepted_rejected(pair: PreferencePair) -> dict[str, object]:
    system = pair.system
    if system is not None and system.strip() == DEFAULT_SYSTEM:
        raise ValueError(f"pair {pair.provenance.pair_id}: the system prompt {system!r} would read "
                         "back as the model's default system prompt")
    turns = pair.prompt[1:] if system is not None else pair.prompt
    users, answers = list(turns[0::2]), list(turns[1::2])
    alternating = all(m.role == "user" for m in users) and all(m.role == "assistant" for m in answers)
    if not alternating or len(users) != len(answers) + 1:
        raise ValueError(f"pair {pair.provenance.pair_id}: accepted_rejected needs the prompt to "
                         f"alternate user/assistant after an optional system message, got roles "
                         f"{_roles(pair.prompt)}; write it as trl instead")
    history = [m.content for m in answers]
    return {
        "Template": [system if system is not None else DEFAULT_SYSTEM],
        "User": [m.content for m in users],
        "Accepted": [*history, pair.chosen],
        "Rejected": [*history, pair.rejected],
    }


def _roles(prompt: tuple[Message, ...]) -> str:
    return "/".join(m.role for m in prompt) or "none"


@contextmanager
def jsonl_writer(path: str | os.PathLike[str]) -> Iterator[Callable[[dict], None]]:
    """A function that appends one record as a JSON line (gzipped for a `.gz` name) to a temp
    file, renamed onto `path` when the block ends; if the block raises, `path` is untouched.

    Values JSON cannot hold (a Parquet timestamp in a rejected row) are written as strings.
    """
    with atomic_open(path, "wb") as raw:
        stream = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if _gzipped(path) else raw

        def write(record: dict) -> None:
            stream.write(json.dumps(record, ensure_ascii=False, default=str).encode("utf-8") + b"\n")

        yield write
        if stream is not raw:
            stream.close()  # writes the gzip trailer; the underlying file stays open for fsync


def write_jsonl_atomic(records: Iterable[dict], path: str | os.PathLike[str]) -> int:
    """Write records as JSON lines (gzipped for a `.gz` name) via a temp file and a rename.

    If `records` raises part-way, the temp file is removed and any existing file is untouched.
    Returns the number of records written.
    """
    count = 0
    with jsonl_writer(path) as write:
        for record in records:
            write(record)
            count += 1
    return count


def write_pairs(pairs: Iterable[PreferencePair], path: str | os.PathLike[str], fmt: str) -> int:
    """Write pairs as `fmt` records, atomically; nothing is written if any pair cannot be expressed."""
    return write_jsonl_atomic((to_record(pair, fmt) for pair in pairs), path)


def _gzipped(path: str | os.PathLike[str]) -> bool:
    return Path(path).name.endswith(".gz")
