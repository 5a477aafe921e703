"""Unpaired feedback for KTO: TRL's `prompt` / `completion` / `label` rows.

`prompt` is a string (one user turn) or a message list (optional system message, ending with a
user turn); `completion` a string or a list holding one assistant message; `label` true
(desirable, thumbs up) or false (undesirable). Every row is checked and every defect reported as
`PATH:LINE: FIELD: message`, as for pairs; exact duplicates (same prompt, completion and label)
are dropped with a warning; a prompt/completion given both labels is an error, since it cannot
be both desirable and not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefalign.data.formats._common import RecordCheck, json_type, provenance
from prefalign.data.formats.trl import _explicit_prompt, _response
from prefalign.data.io import RawRecord, iter_records
from prefalign.data.types import DataError, Defect, Message, Provenance

FIELDS = ("prompt", "completion", "label")


@dataclass(frozen=True)
class UnpairedExample:
    """One response to a prompt, labelled desirable or not."""

    prompt: tuple[Message, ...]
    completion: str
    desirable: bool
    provenance: Provenance

    @property
    def example_id(self) -> str:
        return self.provenance.pair_id

    def content_key(self) -> tuple:
        return tuple((m.role, m.content) for m in self.prompt), self.completion


@dataclass(frozen=True)
class UnpairedLoadResult:
    examples: list[UnpairedExample]
    defects: list[Defect]
    warnings: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        desirable = sum(e.desirable for e in self.examples)
        return {"loaded": len(self.examples), "desirable": desirable,
                "undesirable": len(self.examples) - desirable}


def looks_unpaired(data: Mapping) -> bool:
    return "completion" in data and "label" in data and "chosen" not in data


def parse_unpaired(data: Mapping, base: Provenance) -> tuple[UnpairedExample | None, list[Defect]]:
    """One example per row, or None with all of the row's defects."""
    check = RecordCheck(base)
    prompt = _explicit_prompt(check, check.get(data, "prompt"))
    completion = _response(check, check.get(data, "completion"), "completion", prompt)
    label = data.get("label")
    if "label" not in data:
        check.add("label", "missing field")
    elif not isinstance(label, bool):
        check.add("label", f"expected true or false, got {json_type(label)} {label!r}")
    if check.defects or prompt is None or completion is None:
        return None, check.defects
    return UnpairedExample(tuple(prompt), completion, bool(label),
                           provenance(base, data, FIELDS)), []


def load_unpaired(sources: Sequence[Any], on_error: str = "raise") -> UnpairedLoadResult:
    """Examples from paths (JSONL, JSON arrays, gz) or in-memory rows, every row checked.
    on_error "raise": DataError listing every defect; "skip": rows with defects are left out."""
    examples, defects = [], []
    for source in sources:
        source = os.fspath(source) if isinstance(source, Path) else source
        for record in iter_records(source):
            example, found = _record(record)
            defects += found
            if example is not None:
                examples.append(example)
    if not examples and not defects:
        defects.append(Defect(_name(sources), 0, "<source>", "no records"))
    defects += _conflicting_labels(examples)
    if defects and on_error == "raise":
        raise DataError(defects, summary=f"{len(defects)} defect(s); nothing loaded")
    bad = {(d.source, d.line) for d in defects}
    kept = [e for e in examples if (e.provenance.source, e.provenance.line) not in bad]
    unique, warnings = _drop_duplicates(kept)
    return UnpairedLoadResult(unique, defects, warnings)


def _record(record: RawRecord) -> tuple[UnpairedExample | None, list[Defect]]:
    if record.defect is not None or record.data is None:
        return None, [record.defect] if record.defect is not None else []
    return parse_unpaired(record.data, Provenance(record.source, record.line))


def _conflicting_labels(examples: list[UnpairedExample]) -> list[Defect]:
    seen: dict[tuple, UnpairedExample] = {}
    defects = []
    for example in examples:
        first = seen.setdefault(example.content_key(), example)
        if first.desirable != example.desirable:
            where = f"{first.provenance.source}:{first.provenance.line}"
            defects.append(Defect(example.provenance.source, example.provenance.line, "label",
                                  f"the same prompt and completion are labelled {first.desirable}"
                                  f" at {where}; an example cannot be both"))
    return defects


def _drop_duplicates(examples: list[UnpairedExample]) -> tuple[list[UnpairedExample], list[str]]:
    seen, unique = set(), []
    for example in examples:
        key = (example.content_key(), example.desirable)
        if key not in seen:
            seen.add(key)
            unique.append(example)
    dropped = len(examples) - len(unique)
    return unique, ([f"dropped {dropped} exact duplicate example(s)"] if dropped else [])


def _name(sources: Sequence[Any]) -> str:
    return ", ".join(str(s) for s in sources if isinstance(s, str | os.PathLike)) or "<list>"
