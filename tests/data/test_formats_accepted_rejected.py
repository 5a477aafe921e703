"""The Accepted/Rejected format (seed document 003): pairs per differing turn, every defect named."""

from __future__ import annotations

from pathlib import Path

from prefalign.data.formats import accepted_rejected
from prefalign.data.load import validate
from prefalign.data.types import Message, Provenance

FILES = Path(__file__).parent / "files"
BASE = Provenance("mem.jsonl", 5)


def _record(**overrides):
    record = {"Template": ["CUSTOM"], "User": ["q"], "Accepted": ["good"], "Rejected": ["bad"]}
    return {**record, **overrides}


def test_single_exchange_with_default_system_prompt():
    pairs, defects = accepted_rejected.parse(_record(id="r1", category="safety"), BASE)
    assert defects == []
    (pair,) = pairs
    assert pair.prompt == (Message("user", "q"),)  # "CUSTOM": no system message
    assert (pair.chosen, pair.rejected) == ("good", "bad")
    origin = pair.provenance
    assert (origin.source, origin.line, origin.record_id, origin.turn) == ("mem.jsonl", 5, "r1", None)
    assert origin.metadata == (("category", "safety"),)


def test_custom_template_becomes_the_system_message():
    pairs, _ = accepted_rejected.parse(_record(Template=["You are terse."]), BASE)
    assert pairs[0].prompt == (Message("system", "You are terse."), Message("user", "q"))
    assert pairs[0].system == "You are terse."


def test_multi_turn_rule_history_from_accepted_and_identical_turns_yield_nothing():
    """Turns 0 and 2 are identical (no pair); turns 1 and 3 differ (two pairs).

    The history always continues with Accepted[i], so the turn-3 prompt holds A0, A1, A2.
    """
    record = _record(
        User=["u0", "u1", "u2", "u3"],
        Accepted=["a0", "a1", "a2", "a3"],
        Rejected=["a0", "r1", "a2", "r3"],
    )
    pairs, defects = accepted_rejected.parse(record, BASE)
    assert defects == []
    assert [p.provenance.turn for p in pairs] == [1, 3]
    assert [(p.chosen, p.rejected) for p in pairs] == [("a1", "r1"), ("a3", "r3")]
    assert [m.content for m in pairs[1].prompt] == ["u0", "a0", "u1", "a1", "u2", "a2", "u3"]
    assert [m.role for m in pairs[0].prompt] == ["user", "assistant", "user"]
    assert pairs[1].provenance.pair_id == "mem.jsonl:5#turn3"


def test_all_turns_identical_yields_no_pair():
    pairs, defects = accepted_rejected.parse(_record(Accepted=["same"], Rejected=["same"]), BASE)
    assert (pairs, defects) == ([], [])


def test_every_defect_of_a_record_is_reported():
    record = {"Template": ["A", "B"], "User": ["q", 3], "Accepted": ["x", "  "]}
    _, defects = accepted_rejected.parse(record, BASE)
    assert [str(d) for d in defects] == [
        "mem.jsonl:5: Template: must be a list of exactly one string, got 2 items",
        "mem.jsonl:5: User[1]: expected a string, got integer",
        "mem.jsonl:5: Accepted[1]: empty or whitespace-only response",
        "mem.jsonl:5: Rejected: missing field",
    ]


def test_defects_in_a_broken_file_carry_path_line_and_field():
    path = FILES / "ar_broken.jsonl"
    result = validate(path)
    assert [str(d) for d in result.defects] == [
        f"{path}:2: Accepted: has 3 item(s) but User has 2; User, Accepted, Rejected must have equal length",
        f"{path}:3: Template: must be a list of exactly one string, got string",
        f"{path}:4: Template: must be a list of exactly one string, got 2 items",
        f"{path}:4: User[1]: is null",
        f"{path}:4: Rejected: missing field",
        f"{path}:5: User[0]: expected a string, got integer",
        f"{path}:5: Accepted[0]: empty or whitespace-only response",
        f"{path}:6: <line>: not valid JSON: Expecting ',' delimiter (column 77)",
        f"{path}:7: <record>: expected a JSON object, got array",
        f'{path}:9: Template[0]: empty or whitespace-only system prompt (use "CUSTOM" for the default)',
        f"{path}:9: User: must not be empty",
        f"{path}:9: Accepted: expected a list of strings, got string",
        f"{path}:9: Rejected: is null",
    ]
    # Eight records (line 8 is blank): line 1 is the only valid one.
    assert (result.records_read, result.records_rejected, len(result.pairs)) == (8, 7, 1)


def test_json_array_provenance_is_the_element_index():
    result = validate(FILES / "ar_array.json")
    assert [p.provenance.line for p in result.pairs] == [0, 1]
    assert result.pairs[1].system == "You answer in French."


def test_bundled_examples_load():
    from prefalign.data.bundled import bundled_path

    result = validate(bundled_path("examples"))
    assert result.defects == [] and result.format_by_source[str(bundled_path("examples"))] == (
        "accepted_rejected"
    )
    guide = [p for p in result.pairs if p.provenance.record_id == "guide-2"]
    assert [p.provenance.pair_id for p in guide] == ["guide-2#turn1"]  # turn 0 is identical
