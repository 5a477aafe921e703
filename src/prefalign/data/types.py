"""The one preference-pair type that every input format normalises to, and the defect type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Provenance:
    """Where a pair came from.

    `line` is the 1-based line of a JSONL file, the 1-based line a CSV row starts on, the
    1-based row of a Parquet file or saved dataset, or the 0-based element index of a JSON array
    or an in-memory list/Dataset. `turn` is the 0-based exchange index for multi-turn records
    that yield several pairs (Accepted/Rejected format), else None.
    """

    source: str
    line: int
    record_id: str | None = None
    turn: int | None = None
    metadata: tuple[tuple[str, str], ...] = ()

    @property
    def pair_id(self) -> str:
        """A stable id for this pair: record id (or source:line), plus the turn when set."""
        base = self.record_id if self.record_id is not None else f"{self.source}:{self.line}"
        return base if self.turn is None else f"{base}#turn{self.turn}"

    def meta(self, key: str, default: str | None = None) -> str | None:
        return dict(self.metadata).get(key, default)


@dataclass(frozen=True)
class PreferencePair:
    """A prompt (chat messages) with a preferred and a dispreferred assistant response.

    The prompt never contains the response; it ends with a user message. A prompt without a
    system message means "the model's own default system prompt" (the chat template decides).
    """

    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    provenance: Provenance = field(compare=False)

    @property
    def system(self) -> str | None:
        return self.prompt[0].content if self.prompt and self.prompt[0].role == "system" else None

    def prompt_dicts(self) -> list[dict[str, str]]:
        return [m.to_dict() for m in self.prompt]

    def content_key(self) -> tuple:
        """Identity of the pair's content (used for dedupe and fingerprints)."""
        return (tuple((m.role, m.content) for m in self.prompt), self.chosen, self.rejected)


@dataclass(frozen=True)
class Defect:
    """One problem in one record: rendered as `PATH:LINE: FIELD: message`."""

    source: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.field}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "line": self.line, "field": self.field, "message": self.message}


class DataError(ValueError):
    """Raised when input data is invalid; carries every defect found."""

    def __init__(self, defects: list[Defect], summary: str | None = None):
        self.defects = list(defects)
        head = summary or f"{len(self.defects)} defect(s) in preference data"
        shown = "\n".join(str(d) for d in self.defects[:20])
        more = f"\n... and {len(self.defects) - 20} more" if len(self.defects) > 20 else ""
        super().__init__(f"{head}\n{shown}{more}")
