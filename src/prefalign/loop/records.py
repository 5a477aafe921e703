"""The rows the loop writes: TRL conversational preference pairs and TRL `messages` SFT rows,
each with its provenance, readable by `prefalign data validate|audit`, `train` and `sft`.

A row is `id` (the prompt id), the format's fields, a few scalar labels at the top level (the
prompt's scalar columns such as `kind` and `category`, and `round`, `chosen_score`,
`rejected_score`: the loaders keep these as the pair's metadata, so evaluation can slice by
category), and `metadata`: the full provenance as one object (the loaders pass over it).
Writing goes through `write_outputs`: the old lineage record is removed first, then the rows
and the new lineage record are written, each atomically, so a crash never leaves rows beside a
lineage record that describes other rows.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefalign.data.conversation import Conversation, fingerprint_conversations
from prefalign.data.fingerprint import fingerprint_pairs
from prefalign.data.types import Message, PreferencePair, Provenance
from prefalign.data.writers import RESERVED_KEYS, to_record, write_jsonl_atomic
from prefalign.loop.lineage import lineage_path, write_lineage

# What `prefalign data validate` fingerprints a pair file under (its default load options).
PAIR_FINGERPRINT_OPTIONS = {"preference_axis": "better", "dedupe": True}
METADATA_KEY = "metadata"
_NOT_LABELS = RESERVED_KEYS | {"messages", "completion", METADATA_KEY, "prompt_id"}


def labels(columns: Mapping[str, object], **extra: object) -> dict[str, object]:
    """The scalar columns a loader keeps as metadata, then `extra` (which wins)."""
    kept = {k: v for k, v in columns.items()
            if k not in _NOT_LABELS and _is_scalar(v)}
    return {**kept, **extra}


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | bool) or isinstance(value, numbers.Real)


def pair_row(pair_id: str, prompt: tuple[Message, ...], chosen: str, rejected: str,
             top: Mapping[str, object], metadata: Mapping[str, Any]) -> tuple[dict, PreferencePair]:
    """A TRL conversational pair row and the PreferencePair a loader reads back from it."""
    pair = PreferencePair(prompt, chosen, rejected, Provenance("loop", 0, record_id=pair_id))
    return {**to_record(pair, "trl"), **top, METADATA_KEY: dict(metadata)}, pair


def sft_row(row_id: str, prompt: tuple[Message, ...], answer: str, top: Mapping[str, object],
            metadata: Mapping[str, Any]) -> tuple[dict, Conversation]:
    """A TRL `messages` row (the prompt, then the answer) and its Conversation."""
    messages = (*prompt, Message("assistant", answer))
    conversation = Conversation(messages, Provenance("loop", 0, record_id=row_id))
    record = {"id": row_id, "messages": [m.to_dict() for m in messages], **top,
              METADATA_KEY: dict(metadata)}
    return record, conversation


def fingerprint(items: Sequence[PreferencePair] | Sequence[Conversation]) -> str:
    """The fingerprint `prefalign data validate` (or `validate --sft`) prints for the rows."""
    if all(isinstance(item, Conversation) for item in items):
        return fingerprint_conversations(items)  # type: ignore[arg-type]
    return fingerprint_pairs(items, PAIR_FINGERPRINT_OPTIONS)  # type: ignore[arg-type]


def write_outputs(output: str | Path, rows: Sequence[dict], lineage: Mapping[str, Any]) -> Path:
    """Rows to `output` and the lineage record beside it (module docstring); its path."""
    lineage_path(output).unlink(missing_ok=True)
    write_jsonl_atomic(rows, output)
    return write_lineage(output, lineage)
