"""Field checks shared by the format parsers: every defect is collected, none stops the record."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from prefalign.data.io import json_type
from prefalign.data.types import Defect, Message, Provenance

ID_KEYS = ("id", "record_id", "uid")
ROLES = ("system", "user", "assistant")
# Extra scalar fields longer than this are left out of the metadata: they are payload, not labels.
MAX_METADATA_CHARS = 256


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


@dataclass(frozen=True)
class ParseOptions:
    """Options that change how a record becomes pairs (only PKU-SafeRLHF has one today)."""

    preference_axis: Literal["better", "safer"] = "better"

    def __post_init__(self) -> None:
        if self.preference_axis not in ("better", "safer"):
            raise ValueError(
                f"preference_axis must be 'better' or 'safer', got {self.preference_axis!r}"
            )


DEFAULT_OPTIONS = ParseOptions()


@dataclass
class RecordCheck:
    """Collects the defects of one record, located at its source and line."""

    base: Provenance
    defects: list[Defect] = field(default_factory=list)

    def add(self, field_name: str, message: str) -> None:
        self.defects.append(Defect(self.base.source, self.base.line, field_name, message))

    def get(self, data: Mapping, key: str) -> object:
        """The field's value, or MISSING (reported) when the key is absent or null."""
        if key not in data:
            self.add(key, "missing field")
            return MISSING
        if data[key] is None:
            self.add(key, "is null")
            return MISSING
        return data[key]

    def text(self, value: object, field_name: str, kind: str) -> str | None:
        """A non-empty string, else None with the defect recorded (MISSING: already reported)."""
        if value is MISSING:
            return None
        if value is None:
            self.add(field_name, "is null")
        elif not isinstance(value, str):
            self.add(field_name, f"expected a string, got {json_type(value)}")
        elif not value.strip():
            self.add(field_name, f"empty or whitespace-only {kind}")
        else:
            return value
        return None

    def message(self, value: object, field_name: str) -> Message | None:
        """One `{"role": ..., "content": ...}` chat message."""
        if not isinstance(value, Mapping):
            self.add(field_name, f"expected a message object, got {json_type(value)}")
            return None
        role = value.get("role", MISSING)
        role_ok = isinstance(role, str) and role in ROLES
        if role is MISSING:
            self.add(f"{field_name}.role", "missing field")
        elif not role_ok:
            self.add(f"{field_name}.role", f"must be one of {', '.join(ROLES)}; got {role!r}")
        content = self.text(value.get("content", MISSING), f"{field_name}.content", "content")
        if "content" not in value:
            self.add(f"{field_name}.content", "missing field")
        return Message(role, content) if role_ok and content is not None else None

    def messages(self, value: object, field_name: str) -> list[Message] | None:
        """A list of chat messages; every element is checked before giving up."""
        if value is MISSING:
            return None
        if not isinstance(value, list):
            self.add(field_name, f"expected a list of messages, got {json_type(value)}")
            return None
        if not value:
            self.add(field_name, "must not be empty")
            return None
        parsed = [self.message(item, f"{field_name}[{i}]") for i, item in enumerate(value)]
        return None if any(m is None for m in parsed) else parsed  # type: ignore[return-value]

    def prompt_roles(self, prompt: list[Message], field_name: str) -> bool:
        """A prompt may open with one system message, needs a user message, and ends with one."""
        ok = True
        for i, msg in enumerate(prompt):
            if msg.role == "system" and i > 0:
                self.add(f"{field_name}[{i}].role", "a system message may only come first")
                ok = False
        if not prompt or prompt[-1].role != "user":
            last = prompt[-1].role if prompt else "nothing"
            self.add(field_name, f"the prompt must end with a user message, got {last}")
            ok = False
        return ok


def record_id(data: Mapping) -> str | None:
    """The record's own id (`id`, `record_id` or `uid`), as a string, if it has a scalar one."""
    for key in ID_KEYS:
        value = data.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
    return None


def _metadata_value(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        text = str(value)
        return text if len(text) <= MAX_METADATA_CHARS else None
    # Flags such as PKU's harm categories ({"Violence": true, ...}): keep the names set to true.
    if isinstance(value, Mapping) and value and all(isinstance(v, bool) for v in value.values()):
        return ",".join(sorted(str(k) for k, v in value.items() if v))
    return None


def metadata(data: Mapping, format_fields: Collection[str]) -> tuple[tuple[str, str], ...]:
    """Scalar extra fields (category, source, subset, ...) as sorted (key, value) string pairs."""
    kept = {}
    for key, value in data.items():
        if key in format_fields or key in ID_KEYS:
            continue
        text = _metadata_value(value)
        if text is not None:
            kept[str(key)] = text
    return tuple(sorted(kept.items()))


def provenance(
    base: Provenance,
    data: Mapping,
    format_fields: Collection[str],
    *,
    turn: int | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> Provenance:
    """The base location completed with the record's id, metadata and turn."""
    meta = tuple(sorted(dict(metadata(data, format_fields) + extra).items()))
    return replace(base, record_id=record_id(data), turn=turn, metadata=meta)
