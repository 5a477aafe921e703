"""The conversation type that every SFT input normalises to, and the rules its turns follow.

A conversation is an optional leading system message, then user and assistant turns that
alternate starting with a user turn, ending with an assistant turn: every assistant turn is
something to learn, and a trailing user turn would have nothing to learn. The checks here give
`RecordCheck` defects (`PATH:LINE: FIELD: message`) so the loaders report every problem of a row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prefalign.data.formats._common import MISSING, ROLES, RecordCheck
from prefalign.data.io import json_type
from prefalign.data.types import Message, Provenance

FINGERPRINT_VERSION = "prefalign-conversations-v1"
# What an empty content is called in its defect, by the message's role.
_CONTENT_KIND = {"system": "system prompt", "user": "user turn", "assistant": "assistant turn"}
# (field, message prefix) that names message i in a defect.
Locate = Callable[[int], tuple[str, str]]


@dataclass(frozen=True)
class Conversation:
    """Chat messages to learn from: optional system, then user/assistant alternating, ending
    with an assistant turn. Equality and `content_key` ignore where the conversation came from."""

    messages: tuple[Message, ...]
    provenance: Provenance = field(compare=False)

    def __post_init__(self) -> None:
        problems = [text for _, text in role_problems([m.role for m in self.messages])]
        problems += [
            f"message {i}: empty or whitespace-only assistant turn"
            for i, m in enumerate(self.messages)
            if m.role == "assistant" and not m.content.strip()
        ]
        if problems:
            raise ValueError(f"conversation {self.conversation_id}: " + "; ".join(problems))

    @property
    def conversation_id(self) -> str:
        """Record id (or source:line), plus the turn when set: `Provenance.pair_id`."""
        return self.provenance.pair_id

    @property
    def system(self) -> str | None:
        first = self.messages[0]
        return first.content if first.role == "system" else None

    @property
    def assistant_turns(self) -> int:
        return sum(m.role == "assistant" for m in self.messages)

    def message_dicts(self) -> list[dict[str, str]]:
        return [m.to_dict() for m in self.messages]

    def content_key(self) -> tuple:
        """Identity of the conversation's content (used to drop exact duplicates)."""
        return tuple((m.role, m.content) for m in self.messages)


def role_problems(roles: Sequence[str]) -> list[tuple[int | None, str]]:
    """Where the roles break the conversation rules: (message index or None, what is wrong)."""
    problems: list[tuple[int | None, str]] = []
    previous: str | None = None
    for index, role in enumerate(roles):
        if role == "system":
            if index > 0:
                problems.append((index, "a system message may only come first"))
            continue
        if previous is None and role != "user":
            problems.append((index, f"the first turn must be a user turn (after an optional "
                                    f"system message), got {role}"))
        elif role == previous:
            problems.append((index, f"{role} follows {role}; user and assistant turns must "
                                    "alternate"))
        previous = role
    if "assistant" not in roles:
        problems.append((None, "no assistant turn, so nothing to learn"))
    elif roles[-1] == "user":
        problems.append((len(roles) - 1, "the conversation ends with a user turn, which has "
                                         "nothing to learn; it must end with an assistant turn"))
    return problems


def report_role_problems(
    check: RecordCheck, roles: Sequence[str], locate: Locate, whole_field: str
) -> bool:
    """Add a defect per role problem; True when there is none."""
    problems = role_problems(roles)
    for index, text in problems:
        if index is None:
            check.add(whole_field, text)
        else:
            field_name, prefix = locate(index)
            check.add(field_name, prefix + text)
    return not problems


def list_field(name: str, offset: int = 0) -> Locate:
    """Locate message i as `name[i - offset].role` (offset: messages before this list)."""
    return lambda index: (f"{name}[{index - offset}].role", "")


def message_list(check: RecordCheck, value: object, field_name: str) -> list[Message] | None:
    """A non-empty list of {role, content} messages; every element is checked before giving up."""
    if value is MISSING:
        return None
    if not isinstance(value, list):
        check.add(field_name, f"expected a list of messages, got {json_type(value)}")
        return None
    if not value:
        check.add(field_name, "must not be empty")
        return None
    parsed = [_message(check, item, f"{field_name}[{i}]") for i, item in enumerate(value)]
    return None if any(m is None for m in parsed) else parsed  # type: ignore[return-value]


def _message(check: RecordCheck, value: object, field_name: str) -> Message | None:
    if not isinstance(value, Mapping):
        check.add(field_name, f"expected a message object, got {json_type(value)}")
        return None
    role = _role(check, value, f"{field_name}.role")
    kind = _CONTENT_KIND.get(role, "content") if role is not None else "content"
    content = check.text(_field(check, value, "content", field_name), f"{field_name}.content", kind)
    return Message(role, content) if role is not None and content is not None else None


def _field(check: RecordCheck, value: Mapping, key: str, parent: str) -> object:
    """value[key], or MISSING with `parent.key: missing field` / `is null` recorded."""
    if key not in value:
        check.add(f"{parent}.{key}", "missing field")
        return MISSING
    if value[key] is None:
        check.add(f"{parent}.{key}", "is null")
        return MISSING
    return value[key]


def _role(check: RecordCheck, value: Mapping, field_name: str) -> str | None:
    role = _field(check, value, "role", field_name.removesuffix(".role"))
    if role is MISSING:
        return None
    if not isinstance(role, str):
        check.add(field_name, f"expected a string, got {json_type(role)}")
        return None
    if role not in ROLES:
        check.add(field_name, f"unknown role {role!r} (expected system, user or assistant)")
        return None
    return role


def fingerprint_conversations(
    conversations: Iterable[Conversation], options: Mapping[str, object] | None = None
) -> str:
    """Hex sha256 over (version, options, every conversation's messages) in order: the same
    conversations read from any format or file give the same fingerprint."""
    digest = hashlib.sha256()
    digest.update(_canonical({"version": FINGERPRINT_VERSION, "options": dict(options or {})}))
    for conversation in conversations:
        digest.update(b"\n" + _canonical([[m.role, m.content] for m in conversation.messages]))
    return digest.hexdigest()


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
