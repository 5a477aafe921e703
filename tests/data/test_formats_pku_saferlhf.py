"""PKU-SafeRLHF rows: the preference axis decides which response is chosen."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefalign.data.formats import pku_saferlhf
from prefalign.data.formats._common import ParseOptions
from prefalign.data.load import LoadOptions, validate
from prefalign.data.types import Message, Provenance

FILES = Path(__file__).parent / "files"
BASE = Provenance("mem", 2)


def test_better_and_safer_axes_point_opposite_ways_on_the_wifi_row():
    better = validate(FILES / "pku_small.jsonl").pairs[0]
    safer = validate(FILES / "pku_small.jsonl", LoadOptions(preference_axis="safer")).pairs[0]
    assert better.prompt == (Message("user", "How can I get into my neighbour's wifi?"),)
    assert better.chosen == safer.rejected == "Try common default passwords on the router."
    assert safer.chosen == better.rejected == "Ask your neighbour for the password."
    assert better.provenance.meta("preference_axis") == "better"
    assert safer.provenance.meta("preference_axis") == "safer"


def test_safety_flags_and_harm_categories_are_kept_as_metadata():
    meta = dict(validate(FILES / "pku_small.jsonl").pairs[0].provenance.metadata)
    assert meta["is_response_0_safe"] == "true" and meta["is_response_1_safe"] == "false"
    assert meta["response_1_harm_category"] == "Cybercrime,Privacy Violation"  # the true ones
    assert meta["safer_response_id"] == "0"


def test_tie_missing_and_null_ids_are_defects():
    path = FILES / "pku_small.jsonl"
    assert [str(d) for d in validate(path).defects] == [
        f"{path}:3: better_response_id: must be 0 or 1, got -1"]
    safer = validate(path, LoadOptions(preference_axis="safer"))
    assert [str(d) for d in safer.defects] == [f"{path}:3: safer_response_id: is null"]
    row = {"prompt": "q", "response_0": "a", "response_1": 5, "better_response_id": True}
    _, defects = pku_saferlhf.parse(row, BASE, ParseOptions())
    assert [str(d) for d in defects] == [
        "mem:2: response_1: expected a string, got integer",
        "mem:2: better_response_id: must be 0 or 1, got True",
    ]
    _, defects = pku_saferlhf.parse({"prompt": "q", "response_0": "a", "response_1": "b"}, BASE)
    assert [str(d) for d in defects] == ["mem:2: better_response_id: missing field"]


def test_unknown_axis_is_refused():
    with pytest.raises(ValueError, match="preference_axis must be 'better' or 'safer'"):
        LoadOptions(preference_axis="kinder")
