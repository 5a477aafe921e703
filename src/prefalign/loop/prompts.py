"""Prompt files of the feedback loop: one prompt per row, its id, and its other columns.

A row (JSONL, JSON array, optionally gzipped) holds `prompt`, a string (one user turn) or a
list of chat messages ending with a user turn (an optional system message first). Its id is
`id` or `prompt_id` when present, else `STEM:LINE` (the file's stem and the row's line). Every
other column (`kind`, `category`, ...) travels with the prompt to the judges and into the
written rows. Every defect of the file is reported as FILE:LINE: field: message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prefalign.data.conversation import message_list
from prefalign.data.formats._common import MISSING, RecordCheck
from prefalign.data.io import iter_records, json_type
from prefalign.data.types import DataError, Defect, Message, Provenance

ID_KEYS = ("id", "prompt_id")
PROMPT_KEY = "prompt"


@dataclass(frozen=True)
class PromptRow:
    """One prompt: its id, chat messages, the row's other columns, and where it was read."""

    prompt_id: str
    prompt: tuple[Message, ...]
    columns: Mapping[str, object] = field(default_factory=dict)
    source: str = ""
    line: int = 0


def read_prompt_file(path: str | Path) -> list[PromptRow]:
    """Every prompt of `path`, in file order; DataError listing every defect of the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no prompt file {path}")
    rows: list[PromptRow] = []
    defects: list[Defect] = []
    seen: set[str] = set()
    for record in iter_records(path):
        if record.defect is not None:
            defects.append(record.defect)
            continue
        check = RecordCheck(Provenance(str(path), record.line))
        row = _prompt_row(check, record.data or {}, path.stem)
        if row is not None and row.prompt_id in seen:
            check.add("id", f"duplicate prompt id {row.prompt_id!r}")
        elif row is not None:
            seen.add(row.prompt_id)
            rows.append(row)
        defects += check.defects
    if not rows and not defects:
        defects.append(Defect(str(path), 1, "<file>", "no prompts in the file"))
    if defects:
        raise DataError(defects, f"{len(defects)} defect(s) in prompt file {path}")
    return rows


def _prompt_row(check: RecordCheck, data: Mapping, stem: str) -> PromptRow | None:
    prompt = parse_prompt(check, data.get(PROMPT_KEY, MISSING), PROMPT_KEY)
    prompt_id = row_id(check, data, f"{stem}:{check.base.line}")
    if prompt is None or prompt_id is None:
        return None
    columns = {k: v for k, v in data.items() if k != PROMPT_KEY and k not in ID_KEYS}
    return PromptRow(prompt_id, prompt, columns, check.base.source, check.base.line)


def parse_prompt(check: RecordCheck, value: object, field_name: str) -> tuple[Message, ...] | None:
    """A string (one user message) or a message list that ends with a user turn."""
    if value is MISSING:
        check.add(field_name, "missing field")
        return None
    if isinstance(value, list):
        messages = message_list(check, value, field_name)
        if messages is None or not check.prompt_roles(messages, field_name):
            return None
        return tuple(messages)
    text = check.text(value, field_name, "prompt")
    return None if text is None else (Message("user", text),)


def row_id(check: RecordCheck, data: Mapping, default: str | None) -> str | None:
    """The row's `id` / `prompt_id` (a string or an integer) as a string, else `default`."""
    for key in ID_KEYS:
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
            check.add(key, f"expected a non-empty string or an integer, got {json_type(value)}")
            return None
        return str(value)
    if default is None:
        check.add("prompt_id", "missing field")
    return default
