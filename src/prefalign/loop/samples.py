"""Samples files (`prefalign generate`'s output), read tolerantly: each row is one sampled
completion of one prompt.

Required per row: `prompt_id` (string or integer), `sample` (its index among the prompt's
samples, an integer >= 0) and `text`. Optional: `tokens`, `finish_reason` (end_of_turn |
length). The prompt (`prompt`: a string or chat messages) and the prompt's other columns
(`kind`, `category`, ...) come from the row when it has them, else from the prompt file
(`--prompts FILE`) by prompt id; a row whose prompt is in neither is a defect saying so.
Leading whitespace of `text` is removed: chat templates end the assistant header with a newline
that a byte-level tokenizer would merge with it, so no pair could be tokenised (see
`prefalign.data.template`). The manifest `SAMPLES.jsonl.manifest.json` beside the file, when
there is one, records how the samples were generated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prefalign.data.formats._common import MISSING, RecordCheck
from prefalign.data.io import iter_records, json_type
from prefalign.data.types import DataError, Defect, Message, Provenance
from prefalign.loop.prompts import ID_KEYS, PROMPT_KEY, PromptRow, parse_prompt, row_id

SAMPLE_KEYS = ("prompt_id", "sample", "text", "tokens", "finish_reason")
MANIFEST_SUFFIX = ".manifest.json"


@dataclass(frozen=True)
class Sample:
    """One completion. columns: the prompt's other columns, `prompt_id` among them."""

    prompt_id: str
    index: int
    prompt: tuple[Message, ...]
    text: str
    columns: Mapping[str, object] = field(default_factory=dict)
    line: int = 0
    tokens: int | None = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class SampleSet:
    """The samples of one file, grouped by prompt in order of first appearance."""

    path: Path
    by_prompt: dict[str, list[Sample]]
    manifest: dict | None

    @property
    def samples(self) -> list[Sample]:
        return [sample for group in self.by_prompt.values() for sample in group]


def manifest_path(samples_path: str | Path) -> Path:
    """`SAMPLES.jsonl.manifest.json`: where `prefalign generate` records its settings."""
    path = Path(samples_path)
    return path.with_name(path.name + MANIFEST_SUFFIX)


def read_samples(path: str | Path, prompts: list[PromptRow] | None = None) -> SampleSet:
    """Every sample of `path`; DataError listing every defect (FILE:LINE: field: message)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no samples file {path}")
    by_id = {row.prompt_id: row for row in prompts or []}
    by_prompt: dict[str, list[Sample]] = {}
    defects: list[Defect] = []
    seen: set[tuple[str, int]] = set()
    for record in iter_records(path):
        if record.defect is not None:
            defects.append(record.defect)
            continue
        check = RecordCheck(Provenance(str(path), record.line))
        sample = _sample(check, record.data or {}, by_id, prompts is not None)
        if sample is not None and (sample.prompt_id, sample.index) in seen:
            check.add("sample", f"prompt {sample.prompt_id!r} has sample {sample.index} twice")
        elif sample is not None:
            seen.add((sample.prompt_id, sample.index))
            by_prompt.setdefault(sample.prompt_id, []).append(sample)
        defects += check.defects
    if not by_prompt and not defects:
        defects.append(Defect(str(path), 1, "<file>", "no samples in the file"))
    if defects:
        raise DataError(defects, f"{len(defects)} defect(s) in samples file {path}")
    return SampleSet(path, by_prompt, read_manifest_beside(path))


def read_manifest_beside(path: Path) -> dict | None:
    """The samples' manifest as a dict, or None when there is none beside the file."""
    manifest = manifest_path(path)
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{manifest}: not a JSON manifest ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{manifest}: expected a JSON object, got {json_type(data)}")
    return data


def _sample(check: RecordCheck, data: Mapping, by_id: Mapping[str, PromptRow],
            have_file: bool) -> Sample | None:
    prompt_id = row_id(check, {"prompt_id": data.get("prompt_id")}, None)
    index = _index(check, data.get("sample", MISSING))
    text = data.get("text", MISSING)
    if text is MISSING or not isinstance(text, str):
        check.add("text", "missing field" if text is MISSING
                  else f"expected a string, got {json_type(text)}")
    if prompt_id is None or index is None or check.defects:
        return None
    prompt, columns = _prompt_and_columns(check, data, by_id.get(prompt_id), have_file, prompt_id)
    if prompt is None:
        return None
    tokens = data.get("tokens")
    return Sample(prompt_id, index, prompt, text.lstrip(), {**columns, "prompt_id": prompt_id},
                  check.base.line, tokens if isinstance(tokens, int) else None,
                  _optional_text(data.get("finish_reason")))


def _prompt_and_columns(check: RecordCheck, data: Mapping, row: PromptRow | None,
                        have_file: bool, prompt_id: str) -> tuple[tuple[Message, ...] | None, dict]:
    """The row's own prompt and columns over the prompt file's."""
    own = {k: v for k, v in data.items()
           if k not in SAMPLE_KEYS and k != PROMPT_KEY and k not in ID_KEYS}
    columns = {**(dict(row.columns) if row is not None else {}), **own}
    if PROMPT_KEY in data:
        return parse_prompt(check, data[PROMPT_KEY], PROMPT_KEY), columns
    if row is not None:
        return row.prompt, columns
    where = (f"and prompt id {prompt_id!r} is not in the prompt file" if have_file
             else "and no prompt file was given (--prompts FILE)")
    check.add("prompt", f"missing: the row has no prompt {where}")
    return None, columns


def _index(check: RecordCheck, value: object) -> int | None:
    if value is MISSING:
        check.add("sample", "missing field")
    elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
        check.add("sample", f"expected an integer >= 0, got {value!r}")
    else:
        return value
    return None


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) else None
