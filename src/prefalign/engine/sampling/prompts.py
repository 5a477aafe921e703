"""Prompt files for sampling: JSONL (or a JSON array) with a `prompt` per row, as a string (one
user turn) or a list of {role, content} messages ending with a user turn; an optional `id`
(string or integer; default FILE-STEM:LINE) unique in the file; any other columns are kept and
copied into every sample row of that prompt.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefalign.data.formats._common import MISSING, RecordCheck
from prefalign.data.io import iter_records, json_type
from prefalign.data.types import DataError, Defect, Message, Provenance

# Columns of a sample row; a prompt file may not use them for its own columns.
RESERVED_COLUMNS = ("prompt_id", "sample", "text", "tokens", "finish_reason")
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class PromptRow:
    """One prompt: its id, the chat to answer, its other columns, its line in the file."""

    id: str
    messages: tuple[Message, ...]
    prompt: Any  # the `prompt` value as written in the file (string or messages)
    line: int
    columns: dict[str, Any] = field(default_factory=dict)


def read_prompt_file(path: str | Path) -> list[PromptRow]:
    """Every prompt of the file; DataError listing each defect as FILE:LINE: FIELD: message."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such prompt file")
    rows: list[PromptRow] = []
    defects: list[Defect] = []
    seen: dict[str, int] = {}
    for record in iter_records(path):
        if record.defect is not None:
            defects.append(record.defect)
            continue
        check = RecordCheck(Provenance(str(path), record.line))
        row = _prompt_row(check, record.data or {}, path.stem, record.line)
        if row is not None and row.id in seen:
            check.add("id", f"duplicate id {row.id!r} (first on line {seen[row.id]})")
        elif row is not None:
            seen[row.id] = row.line
        defects += check.defects
        if row is not None and not check.defects:
            rows.append(row)
    if not rows and not defects:
        defects.append(Defect(str(path), 1, "<file>", "no prompts in the file"))
    if defects:
        raise DataError(defects, f"{len(defects)} defect(s) in prompt file {path}")
    return rows


def _prompt_row(check: RecordCheck, data: dict, stem: str, line: int) -> PromptRow | None:
    value = check.get(data, "prompt")
    messages: list[Message] | None = None
    if isinstance(value, str):
        text = check.text(value, "prompt", "prompt")
        messages = [Message("user", text)] if text is not None else None
    elif isinstance(value, list):
        messages = check.messages(value, "prompt")
        if messages is not None and not check.prompt_roles(messages, "prompt"):
            messages = None
    elif value is not MISSING:
        check.add("prompt", f"expected a string or a list of messages, got {json_type(value)}")
    prompt_id = _prompt_id(check, data, f"{stem}:{line}")
    for name in RESERVED_COLUMNS:
        if name in data:
            check.add(name, "this column name is taken by the sample rows; rename it")
    if messages is None or prompt_id is None:
        return None
    columns = {key: item for key, item in data.items() if key not in ("prompt", "id")}
    return PromptRow(prompt_id, tuple(messages), value, line, columns)


def _prompt_id(check: RecordCheck, data: dict, default: str) -> str | None:
    value = data.get("id")
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        check.add("id", f"expected a string or an integer, got {json_type(value)}")
        return None
    if not value.strip():
        check.add("id", "empty")
        return None
    return value


def file_sha256(path: str | Path) -> str:
    """sha256 of the file's bytes: the prompt file's fingerprint."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()
