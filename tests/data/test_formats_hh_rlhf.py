"""hh-rlhf transcripts: the prompt is the longest common prefix ending at an Assistant marker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefalign.data.formats import hh_rlhf
from prefalign.data.load import LoadOptions, load_pairs, validate
from prefalign.data.types import Message, Provenance

FILES = Path(__file__).parent / "files"
REAL = Path("/work/shared/data/external/hh-rlhf-harmless-base/test.jsonl")
needs_real = pytest.mark.skipif(not REAL.is_file(), reason="real hh-rlhf test split not present")
BASE = Provenance("mem", 1)


def test_single_and_multi_turn_transcripts():
    pairs = validate(FILES / "hh_small.jsonl").pairs
    assert pairs[0].prompt == (Message("user", "How do I boil an egg?"),)
    assert (pairs[0].chosen, pairs[0].rejected) == (
        "Put it in boiling water for eight minutes.", "Microwave it in its shell.")
    assert [(m.role, m.content) for m in pairs[1].prompt] == [
        ("user", "Hi"), ("assistant", "Hello, how can I help?"), ("user", "Tell me about cats.")]
    # Leading and trailing whitespace of the turn is stripped, nothing else.
    assert pairs[1].chosen == "Cats are small domesticated carnivores."
    assert pairs[1].provenance.meta("diverged_early") is None


def test_early_divergence_keeps_the_rest_of_each_transcript():
    pair = validate(FILES / "hh_small.jsonl").pairs[2]
    assert pair.prompt == (Message("user", "Is the sea salty?"),)
    assert pair.chosen == (
        "Yes, it holds dissolved salts.\n\nHuman: Why?\n\nAssistant: Rivers carry minerals into it.")
    assert pair.rejected == "No."
    assert pair.provenance.meta("diverged_early") == "true"


def test_defects():
    same_start = {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: z\n\nAssistant: b"}
    _, defects = hh_rlhf.parse(same_start, BASE)
    assert [str(d) for d in defects] == [
        "mem:1: chosen: chosen and rejected share no prefix ending at an '\\n\\nAssistant:' marker"]
    empty = {"chosen": "\n\nHuman: a\n\nAssistant:  ", "rejected": None}
    _, defects = hh_rlhf.parse(empty, BASE)
    assert [str(d) for d in defects] == ["mem:1: rejected: is null"]
    empty["rejected"] = "\n\nHuman: a\n\nAssistant: fine"
    _, defects = hh_rlhf.parse(empty, BASE)
    assert [str(d) for d in defects] == ["mem:1: chosen: empty or whitespace-only response"]
    preamble = {"chosen": "intro\n\nHuman: a\n\nAssistant: b", "rejected": "intro\n\nHuman: a\n\nAssistant: c"}
    _, defects = hh_rlhf.parse(preamble, BASE)
    assert [d.message for d in defects] == ["text before the first '\\n\\nHuman:' marker: 'intro'"]


def test_looks_like_needs_both_markers_and_no_prompt():
    assert hh_rlhf.looks_like({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": 3})
    assert not hh_rlhf.looks_like({"chosen": "Human: a Assistant: b", "rejected": "x"})
    assert not hh_rlhf.looks_like({"prompt": "p", "chosen": "\n\nHuman: a\n\nAssistant: b"})


@needs_real
def test_real_pair_1254_diverges_before_the_last_marker():
    """0-based row 1254 (file line 1255): the transcripts part at the second Assistant turn."""
    pair = next(p for p in validate(REAL).pairs if p.provenance.line == 1255)
    assert [(m.role, m.content) for m in pair.prompt] == [
        ("user", "Are drag queens men?"),
        ("assistant", "No. Drag queens are women who act like stereotypical men."),
        ("user", "Isn't that drag kings?"),
    ]
    assert pair.chosen.startswith("No. Men who impersonate stereotypical women are called drag kings.")
    assert "\n\nAssistant:  I think they call them that because" in pair.chosen
    assert pair.rejected == ("A drag king is the opposite of a drag queen, like a male who acts "
                             "like a stereotypical woman.")
    assert pair.provenance.meta("diverged_early") == "true"


@needs_real
def test_all_real_pairs_parse_except_four_with_an_empty_chosen_reply():
    """2,312 rows: 4 have an empty chosen reply ("\\n\\nAssistant: " and nothing after it) and are
    defects; the other 2,308 load, 5 of them flagged diverged_early (rows 1254, 1688, 1950, 1952,
    2036 as counted in SOURCE.md), with no identical or duplicate pair."""
    result = load_pairs(REAL, LoadOptions(on_error="skip"))
    assert result.records_read == 2312
    assert [str(d).removeprefix(f"{REAL}:") for d in result.defects] == [
        f"{line}: chosen: empty or whitespace-only response" for line in (87, 517, 926, 1104)]
    assert len(result.pairs) == 2308
    assert not result.dropped_identical and not result.dropped_duplicates
    diverged = [p.provenance.line - 1 for p in result.pairs if p.provenance.meta("diverged_early")]
    assert diverged == [1254, 1688, 1950, 1952, 2036]
    for pair in result.pairs:
        assert pair.prompt[-1].role == "user" and pair.chosen.strip() and pair.rejected.strip()


@needs_real
def test_every_real_prompt_reassembles_to_the_shared_transcript_prefix():
    """Prompt turns joined back with their markers are a prefix of both raw transcripts."""
    rows = [json.loads(line) for line in REAL.read_text(encoding="utf-8").splitlines()]
    names = {"user": "Human", "assistant": "Assistant"}
    for pair in validate(REAL).pairs:
        row = rows[pair.provenance.line - 1]
        text = "".join(f"\n\n{names[m.role]}: {m.content}" for m in pair.prompt)
        for side in ("chosen", "rejected"):
            squashed = " ".join(row[side].split())
            assert squashed.startswith(" ".join(text.split())), pair.provenance.pair_id
