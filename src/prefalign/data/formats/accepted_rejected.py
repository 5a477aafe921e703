"""The Accepted/Rejected format: `Template`, `User`, `Accepted`, `Rejected` lists, one index per exchange.

`Template` is a list of exactly one string: "CUSTOM" means the model's own default system prompt,
anything else is the system prompt. The history is built from `User[i]` and `Accepted[i]`; every
turn where `Accepted[i] != Rejected[i]` yields one pair, identical turns yield none.
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

NAME = "accepted_rejected"
FIELDS = ("Template", "User", "Accepted", "Rejected")
EXCHANGE_FIELDS = ("User", "Accepted", "Rejected")
DEFAULT_SYSTEM = "CUSTOM"


def looks_like(data: Mapping) -> bool:
    return any(key in data for key in FIELDS)


def parse(
    data: Mapping, provenance_base: Provenance, options: ParseOptions = DEFAULT_OPTIONS
) -> tuple[list[PreferencePair], list[Defect]]:
    """One pair per turn whose accepted and rejected answers differ; all defects of the record."""
    check = RecordCheck(provenance_base)
    system = _system_prompt(check, check.get(data, "Template"))
    columns = [_string_list(check, data, name) for name in EXCHANGE_FIELDS]
    _check_lengths(check, data)
    if check.defects:
        return [], check.defects
    users, accepted, rejected = columns
    return _pairs(data, provenance_base, system, users, accepted, rejected), []


def _system_prompt(check: RecordCheck, value: object) -> str | None:
    """The system prompt, or None for "CUSTOM" (the model's default) and for defects."""
    if value is MISSING:
        return None
    if not isinstance(value, list) or len(value) != 1:
        got = f"{len(value)} items" if isinstance(value, list) else json_type(value)
        check.add("Template", f"must be a list of exactly one string, got {got}")
        return None
    text = check.text(value[0], "Template[0]", f'system prompt (use "{DEFAULT_SYSTEM}" for the default)')
    return None if text is None or text.strip() == DEFAULT_SYSTEM else text


def _string_list(check: RecordCheck, data: Mapping, name: str) -> list[str] | None:
    value = check.get(data, name)
    if value is MISSING:
        return None
    if not isinstance(value, list):
        check.add(name, f"expected a list of strings, got {json_type(value)}")
        return None
    if not value:
        check.add(name, "must not be empty")
        return None
    kind = "message" if name == "User" else "response"
    items = [check.text(item, f"{name}[{i}]", kind) for i, item in enumerate(value)]
    return None if any(item is None for item in items) else items  # type: ignore[return-value]


def _check_lengths(check: RecordCheck, data: Mapping) -> None:
    lengths = {k: len(data[k]) for k in EXCHANGE_FIELDS if isinstance(data.get(k), list)}
    if len(set(lengths.values())) <= 1:
        return
    reference = next(iter(lengths))
    for name, length in lengths.items():
        if length != lengths[reference]:
            check.add(name, f"has {length} item(s) but {reference} has {lengths[reference]}; "
                            f"{', '.join(EXCHANGE_FIELDS)} must have equal length")


def _pairs(
    data: Mapping,
    base: Provenance,
    system: str | None,
    users: list[str],
    accepted: list[str],
    rejected: list[str],
) -> list[PreferencePair]:
    history = [Message("system", system)] if system is not None else []
    multi_turn = len(users) > 1
    pairs = []
    for turn, (user, good, bad) in enumerate(zip(users, accepted, rejected, strict=True)):
        history.append(Message("user", user))
        if good != bad:
            origin = provenance(base, data, FIELDS, turn=turn if multi_turn else None)
            pairs.append(PreferencePair(tuple(history), good, bad, origin))
        # The conversation continues with the accepted answer, whatever this turn's preference.
        history.append(Message("assistant", good))
    return pairs
