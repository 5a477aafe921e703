"""Anthropic hh-rlhf transcripts: `chosen`/`rejected` strings of "\\n\\nHuman: ..." / "\\n\\nAssistant: ..." turns.

The prompt is the longest common prefix of the two transcripts that ends at an "\\n\\nAssistant:"
marker; each response is the rest of its transcript. In a few real pairs the transcripts diverge
before the last marker: the responses then hold later turns as text, and the pair is marked with
metadata ("diverged_early", "true").
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from prefalign.data.formats._common import DEFAULT_OPTIONS, ParseOptions, RecordCheck, provenance
from prefalign.data.types import Defect, Message, PreferencePair, Provenance

NAME = "hh_rlhf"
FIELDS = ("chosen", "rejected")
HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def looks_like(data: Mapping) -> bool:
    """chosen/rejected with no `prompt`, and a transcript holding both turn markers."""
    if "prompt" in data:
        return False
    texts = [data.get(k) for k in FIELDS]
    return any(isinstance(t, str) and HUMAN in t and ASSISTANT in t for t in texts)


def parse(
    data: Mapping, provenance_base: Provenance, options: ParseOptions = DEFAULT_OPTIONS
) -> tuple[list[PreferencePair], list[Defect]]:
    """One pair per record; all defects of the record."""
    check = RecordCheck(provenance_base)
    chosen = check.text(check.get(data, "chosen"), "chosen", "transcript")
    rejected = check.text(check.get(data, "rejected"), "rejected", "transcript")
    if chosen is None or rejected is None:
        return [], check.defects
    chosen, rejected = _with_leading_break(chosen), _with_leading_break(rejected)
    split = _split_at_common_marker(check, chosen, rejected)
    if split is None:
        return [], check.defects
    prompt_text, chosen_rest, rejected_rest = split
    prompt = _turns(check, prompt_text)
    good = check.text(chosen_rest.strip(), "chosen", "response")
    bad = check.text(rejected_rest.strip(), "rejected", "response")
    if check.defects or prompt is None or good is None or bad is None:
        return [], check.defects
    diverged = any(marker in rest for rest in split[1:] for marker in (HUMAN, ASSISTANT))
    extra = (("diverged_early", "true"),) if diverged else ()
    origin = provenance(provenance_base, data, FIELDS, extra=extra)
    return [PreferencePair(tuple(prompt), good, bad, origin)], []


def _with_leading_break(transcript: str) -> str:
    # Some copies drop the blank line before the first turn; the markers need it.
    return "\n\n" + transcript if transcript.startswith(("Human:", "Assistant:")) else transcript


def _split_at_common_marker(
    check: RecordCheck, chosen: str, rejected: str
) -> tuple[str, str, str] | None:
    """(prompt text before the marker, chosen after it, rejected after it)."""
    common = _common_prefix_length(chosen, rejected)
    marker_at = chosen.rfind(ASSISTANT, 0, common)
    if marker_at < 0:
        check.add("chosen", f"chosen and rejected share no prefix ending at an {ASSISTANT!r} marker")
        return None
    reply_at = marker_at + len(ASSISTANT)
    return chosen[:marker_at], chosen[reply_at:], rejected[reply_at:]


def _common_prefix_length(a: str, b: str) -> int:
    """Length of the longest common prefix, by binary search over slice comparisons (fast in C)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


def _turns(check: RecordCheck, prompt_text: str) -> list[Message] | None:
    """The shared prompt as chat messages; it must end with a Human turn."""
    parts = _TURN.split(prompt_text)
    if parts[0].strip():
        check.add("chosen", f"text before the first {HUMAN!r} marker: {parts[0].strip()[:40]!r}")
        return None
    messages = []
    for number, (speaker, content) in enumerate(zip(parts[1::2], parts[2::2], strict=True), 1):
        if not content.strip():
            check.add("chosen", f"turn {number} ({speaker}) of the shared prompt is empty")
        messages.append(Message(_ROLES[speaker], content.strip()))
    if not messages or messages[-1].role != "user":
        check.add("chosen", f"the shared prompt (before the common {ASSISTANT!r}) must end "
                            "with a Human turn")
        return None
    return messages
