"""SFT record formats: TRL `messages`, TRL `prompt`/`completion`, and the chosen side of pairs.

- messages: `messages`, a list of {role, content} (system/user/assistant, multi-turn);
- prompt_completion: `prompt` and `completion`, both strings (one user turn, one assistant turn)
  or both message lists (TRL's conversational prompt-completion: the prompt's messages, then the
  completion's assistant message(s)); a string on one side and a list on the other also works;
- preference: any format `load_pairs` reads, named `preference:FORMAT`. Each record is checked
  by that format's parser, so a row invalid as a pair is invalid here too. The conversation is
  the pair's prompt plus its chosen response, except:
  * Accepted/Rejected: the whole accepted dialogue of the record (system from `Template`, then
    `User[i]`/`Accepted[i]` for every turn), one conversation per record, read from the record
    directly once the parser found no defect. Records whose answers agree in every turn (no
    pair for DPO) are still conversations;
  * hh-rlhf pairs whose transcripts diverge before the last turn (metadata `diverged_early`):
    the chosen transcript's later turns are split into turns, not learnt as one reply.
Every conversation must then follow the turn rules of `prefalign.data.conversation`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from prefalign.data.conversation import (
    Conversation,
    Locate,
    list_field,
    message_list,
    report_role_problems,
)
from prefalign.data.formats import (
    FORMATS,
    FormatDetectionError,
    ParseOptions,
    accepted_rejected,
    detect_format,
)
from prefalign.data.formats import hh_rlhf as hh
from prefalign.data.formats._common import MISSING, RecordCheck, provenance
from prefalign.data.io import RawRecord, json_type
from prefalign.data.types import Defect, Message, PreferencePair, Provenance

SFT_FORMATS = ("messages", "prompt_completion", "preference")
PREFERENCE_PREFIX = "preference:"
_PAIR_ONLY_KEYS = ("chosen", "rejected", "response_0", "response_1")
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}

Parsed = tuple[Conversation | None, list[Defect]]


def record_format(data: Mapping) -> str | None:
    """The SFT format one record looks like (its keys decide; the parser checks the values)."""
    if "messages" in data:
        return "messages"
    if "completion" in data or ("prompt" in data and not any(k in data for k in _PAIR_ONLY_KEYS)):
        return "prompt_completion"
    if any(module.looks_like(data) for module in FORMATS.values()):
        return "preference"
    return None


def detect_sft_format(records: Iterable[RawRecord], source: str) -> str:
    """The one SFT format of every readable record (`preference:NAME` for pairs).

    Raises FormatDetectionError when no record looks like a known format or records differ.
    """
    readable = [r for r in records if r.data is not None]
    lines: dict[str, list[int]] = {}
    for record in readable:
        kind = record_format(record.data)
        if kind is not None:
            lines.setdefault(kind, []).append(record.line)
    if not lines:
        return _undetected(readable, source)
    if len(lines) > 1:
        listing = "; ".join(f"{kind} at {_line_list(found)}" for kind, found in lines.items())
        raise FormatDetectionError(
            f"the records of {source} mix formats: {listing}. Split them by format, or name "
            "one format to check every record against it"
        )
    kind = next(iter(lines))
    if kind != "preference":
        return kind
    return PREFERENCE_PREFIX + detect_format(readable, source)


def _undetected(readable: list[RawRecord], source: str) -> str:
    if not readable:
        raise FormatDetectionError(f"cannot detect the format of {source}: it has no readable "
                                   "records")
    first = readable[0]
    raise FormatDetectionError(
        f"cannot detect the format of {source}: no record looks like SFT data (messages, "
        f"prompt/completion, or a preference format: {', '.join(FORMATS)}); line {first.line} "
        f"has keys {sorted(map(str, first.data))}"
    )


def _line_list(lines: list[int], shown: int = 5) -> str:
    head = ", ".join(map(str, lines[:shown]))
    more = f" (+{len(lines) - shown} more)" if len(lines) > shown else ""
    return f"line{'s' if len(lines) > 1 else ''} {head}{more}"


def parse_record(fmt: str, data: Mapping, base: Provenance, options: ParseOptions) -> Parsed:
    """One conversation from one record of format `fmt`, or every defect of the record."""
    if fmt == "messages":
        return parse_messages(data, base)
    if fmt == "prompt_completion":
        return parse_prompt_completion(data, base)
    return parse_preference(fmt.removeprefix(PREFERENCE_PREFIX), data, base, options)


def parse_messages(data: Mapping, base: Provenance) -> Parsed:
    check = RecordCheck(base)
    messages = message_list(check, check.get(data, "messages"), "messages")
    if messages is not None:
        report_role_problems(check, [m.role for m in messages], list_field("messages"), "messages")
    return _conversation(check, messages, data, ("messages",))


def parse_prompt_completion(data: Mapping, base: Provenance) -> Parsed:
    check = RecordCheck(base)
    prompt = _side(check, check.get(data, "prompt"), "prompt", "user")
    completion = _side(check, check.get(data, "completion"), "completion", "assistant")
    if prompt is None or completion is None:
        return None, check.defects
    roles = [m.role for m in prompt + completion]
    prompt_field, completion_field = list_field("prompt"), list_field("completion", len(prompt))

    def locate(index: int) -> tuple[str, str]:
        field_name, _ = prompt_field(index) if index < len(prompt) else completion_field(index)
        return _string_side(data, field_name), ""

    report_role_problems(check, roles, locate, "completion")
    return _conversation(check, prompt + completion, data, ("prompt", "completion"))


def _side(check: RecordCheck, value: object, field_name: str, role: str) -> list[Message] | None:
    """A string (one message of `role`) or a message list."""
    if value is MISSING:
        return None
    if isinstance(value, list):
        return message_list(check, value, field_name)
    if not isinstance(value, str):
        check.add(field_name, f"expected a string or a list of messages, got {json_type(value)}")
        return None
    text = check.text(value, field_name, field_name)
    return None if text is None else [Message(role, text)]


def _string_side(data: Mapping, located: str) -> str:
    """`prompt[0].role` names the field itself when that side was a plain string."""
    name = located.split("[", 1)[0]
    return located if isinstance(data.get(name), list) else name


def parse_preference(fmt: str, data: Mapping, base: Provenance, options: ParseOptions) -> Parsed:
    module = FORMATS[fmt]
    pairs, defects = module.parse(data, base, options)
    if defects:
        return None, defects
    if module is accepted_rejected:
        return _accepted_dialogue(data, base)
    (pair,) = pairs  # every other format gives exactly one pair per valid record
    check = RecordCheck(base)
    if module is hh and pair.provenance.meta("diverged_early") == "true":
        reply = _hh_reply_turns(check, pair.chosen, len(pair.prompt))
    else:
        reply = [Message("assistant", pair.chosen)]
    if reply is None:
        return None, check.defects
    messages = [*pair.prompt, *reply]
    report_role_problems(check, [m.role for m in messages], _pair_locate(fmt, data, pair), "chosen")
    if check.defects:
        return None, check.defects
    return Conversation(tuple(messages), pair.provenance), []


def _pair_locate(fmt: str, data: Mapping, pair: PreferencePair) -> Locate:
    """Where turn i of a pair's conversation lives in the record, for its defects."""
    if fmt == "trl" and isinstance(data.get("prompt"), list):
        return lambda i: (f"prompt[{i}].role", "") if i < len(pair.prompt) else ("chosen", "")
    if fmt == "trl" and "prompt" not in data:
        return list_field("chosen")
    return lambda i: ("chosen", f"turn {i + 1}: ")


def _hh_reply_turns(check: RecordCheck, reply: str, before: int) -> list[Message] | None:
    """The turns inside a diverged hh-rlhf reply: its first text is the assistant's."""
    parts = _HH_TURN.split("\n\nAssistant:" + reply)
    messages = []
    for number, (speaker, content) in enumerate(zip(parts[1::2], parts[2::2], strict=True)):
        if not content.strip():
            check.add("chosen", f"turn {before + number + 1} ({speaker}) is empty")
        messages.append(Message(_HH_ROLES[speaker], content.strip()))
    return None if check.defects else messages


def _accepted_dialogue(data: Mapping, base: Provenance) -> Parsed:
    """System from Template ("CUSTOM": the model's default), then User[i]/Accepted[i]."""
    system = data["Template"][0]
    messages = [] if system.strip() == accepted_rejected.DEFAULT_SYSTEM else [
        Message("system", system)]
    for user, answer in zip(data["User"], data["Accepted"], strict=True):
        messages += [Message("user", user), Message("assistant", answer)]
    origin = provenance(base, data, accepted_rejected.FIELDS)
    return Conversation(tuple(messages), origin), []


def _conversation(
    check: RecordCheck, messages: list[Message] | None, data: Mapping, fields: tuple[str, ...]
) -> Parsed:
    if check.defects or messages is None:
        return None, check.defects
    return Conversation(tuple(messages), provenance(check.base, data, fields)), []


__all__ = [
    "PREFERENCE_PREFIX",
    "SFT_FORMATS",
    "FormatDetectionError",
    "detect_sft_format",
    "parse_record",
    "record_format",
]
