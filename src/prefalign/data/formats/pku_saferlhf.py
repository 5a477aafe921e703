"""PKU-SafeRLHF rows: `prompt`, `response_0`, `response_1`, `better_response_id`, `safer_response_id`.

`ParseOptions.preference_axis` picks which id decides the chosen response ("better" or "safer");
an id is 0 or 1 (or the text "0" or "1", as a CSV cell holds it).
The other columns (`is_response_0_safe`, harm categories, severity, ...) are kept as metadata.
"""

from __future__ import annotations

from collections.abc import Mapping

from prefalign.data.formats._common import (
    DEFAULT_OPTIONS,
    MISSING,
    ParseOptions,
    RecordCheck,
    provenance,
)
from prefalign.data.types import Defect, Message, PreferencePair, Provenance

NAME = "pku_saferlhf"
RESPONSES = ("response_0", "response_1")
ID_FIELDS = ("better_response_id", "safer_response_id")
FIELDS = ("prompt", *RESPONSES)  # the ids stay in the metadata: they say which way the pair points


def looks_like(data: Mapping) -> bool:
    return any(key in data for key in (*RESPONSES, *ID_FIELDS))


def parse(
    data: Mapping, provenance_base: Provenance, options: ParseOptions = DEFAULT_OPTIONS
) -> tuple[list[PreferencePair], list[Defect]]:
    """One pair per row, oriented by the chosen preference axis; all defects of the row."""
    check = RecordCheck(provenance_base)
    prompt = check.text(check.get(data, "prompt"), "prompt", "prompt")
    first, second = (check.text(check.get(data, key), key, "response") for key in RESPONSES)
    id_field = f"{options.preference_axis}_response_id"
    preferred = _response_id(check, check.get(data, id_field), id_field)
    if check.defects or prompt is None or first is None or second is None or preferred is None:
        return [], check.defects
    chosen, rejected = (first, second) if preferred == 0 else (second, first)
    extra = (("preference_axis", options.preference_axis),)
    origin = provenance(provenance_base, data, FIELDS, extra=extra)
    return [PreferencePair((Message("user", prompt),), chosen, rejected, origin)], []


def _response_id(check: RecordCheck, value: object, field_name: str) -> int | None:
    if value is MISSING:
        return None
    if value in ("0", "1"):
        return int(value)  # a CSV cell is text
    if isinstance(value, bool) or not isinstance(value, int) or value not in (0, 1):
        # A tie (-1 in some releases) or any other value cannot orient a pair.
        check.add(field_name, f"must be 0 or 1, got {value!r}")
        return None
    return value
