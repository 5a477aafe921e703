"""TRL's preference format: `prompt`/`chosen`/`rejected` as strings or as chat-message lists.

Forms accepted:
- standard: three strings; the prompt becomes a single user message;
- conversational: `prompt` a message list (may open with a system message), `chosen`/`rejected`
  each one assistant message (a string is taken as that message's content);
- implicit prompt: no `prompt`; `chosen` and `rejected` are full conversations that share the
  prompt as a prefix and each end in exactly one assistant message.
"""

from __future__ import annotations

from collections.abc import Mapping

from prefalign.data.formats._common import (
    DEFAULT_OPTIONS,
    MISSING,
    ParseOptions,
    RecordCheck,
    json_type,
    provenance,
)
from prefalign.data.types import Defect, Message, PreferencePair, Provenance

NAME = "trl"
FIELDS = ("prompt", "chosen", "rejected")
_PKU_KEYS = ("response_0", "response_1", "better_response_id", "safer_response_id")


def looks_like(data: Mapping) -> bool:
    """An explicit `prompt` (not a PKU row), or message-list `chosen`/`rejected`."""
    if any(key in data for key in _PKU_KEYS):
        return False
    return "prompt" in data or any(isinstance(data.get(k), list) for k in ("chosen", "rejected"))


def parse(
    data: Mapping, provenance_base: Provenance, options: ParseOptions = DEFAULT_OPTIONS
) -> tuple[list[PreferencePair], list[Defect]]:
    """One pair per record; all defects of the record."""
    check = RecordCheck(provenance_base)
    chosen_value, rejected_value = check.get(data, "chosen"), check.get(data, "rejected")
    if "prompt" in data:
        prompt = _explicit_prompt(check, check.get(data, "prompt"))
        chosen = _response(check, chosen_value, "chosen", prompt)
        rejected = _response(check, rejected_value, "rejected", prompt)
    else:
        prompt, chosen, rejected = _implicit(check, chosen_value, rejected_value)
    if check.defects or prompt is None or chosen is None or rejected is None:
        return [], check.defects
    origin = provenance(provenance_base, data, FIELDS)
    return [PreferencePair(tuple(prompt), chosen, rejected, origin)], []


def _explicit_prompt(check: RecordCheck, value: object) -> list[Message] | None:
    if isinstance(value, list):
        messages = check.messages(value, "prompt")
        return messages if messages is not None and check.prompt_roles(messages, "prompt") else None
    text = check.text(value, "prompt", "prompt")
    return None if text is None else [Message("user", text)]


def _response(
    check: RecordCheck, value: object, field_name: str, prompt: list[Message] | None
) -> str | None:
    """The assistant reply: a string, or a list holding exactly one assistant message."""
    if not isinstance(value, list):
        return check.text(value, field_name, "response")
    messages = check.messages(value, field_name)
    if messages is None:
        return None
    # Some data sets repeat the prompt inside chosen/rejected; the reply is what follows it.
    shared = len(prompt) if prompt and messages[: len(prompt)] == prompt else 0
    return _single_reply(check, messages, shared, field_name)


def _single_reply(
    check: RecordCheck, messages: list[Message], start: int, field_name: str
) -> str | None:
    reply = messages[start:]
    if len(reply) != 1:
        where = f" after the {start} prompt message(s)" if start else ""
        check.add(field_name, f"expected exactly one assistant message{where}, got {len(reply)}")
        return None
    if reply[0].role != "assistant":
        check.add(f"{field_name}[{start}].role", f"expected assistant, got {reply[0].role}")
        return None
    return reply[0].content


def _implicit(
    check: RecordCheck, chosen_value: object, rejected_value: object
) -> tuple[list[Message] | None, str | None, str | None]:
    """Split two full conversations into their shared prompt and their two replies."""
    for value in (chosen_value, rejected_value):
        if value is not MISSING and not isinstance(value, list):
            check.add("prompt", "missing field (needed unless chosen and rejected are message "
                                f"lists that share the prompt; got {json_type(value)})")
            return None, None, None
    chosen_msgs = check.messages(chosen_value, "chosen")
    rejected_msgs = check.messages(rejected_value, "rejected")
    if chosen_msgs is None or rejected_msgs is None:
        return None, None, None
    shared = _shared_prefix_length(chosen_msgs, rejected_msgs)
    prompt = chosen_msgs[:shared]
    if not prompt:
        check.add("chosen", "chosen and rejected share no leading messages, so there is no prompt")
        return None, None, None
    if not check.prompt_roles(prompt, "chosen"):
        return None, None, None
    chosen = _single_reply(check, chosen_msgs, shared, "chosen")
    rejected = _single_reply(check, rejected_msgs, shared, "rejected")
    return prompt, chosen, rejected


def _shared_prefix_length(a: list[Message], b: list[Message]) -> int:
    # Capped so that each side keeps at least its last message as the reply.
    limit = min(len(a), len(b)) - 1
    shared = 0
    while shared < limit and a[shared] == b[shared]:
        shared += 1
    return shared
