"""The bundled tone set (bundled:tone-train, bundled:tone-heldout) keeps its promises: every
record valid, every pair length-balanced (the longer reply at most 25% longer, by words and by
characters, in the direction the record names), the accepted reply the longer in exactly half
the pairs, enough domains, pairs and multi-turn records, held-out topics unseen in training,
fictional contact details, and files that are exactly what scripts/build_tone_data.py builds."""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from prefalign.data.audit import LENGTH_ONLY_ACCURACY_FLAG, audit
from prefalign.data.bundled import bundled_path
from prefalign.data.fingerprint import fingerprint_pairs
from prefalign.data.load import LoadOptions, load_pairs
from prefalign.data.tokenize import token_lengths

REPO = Path(__file__).resolve().parents[2]
SPLITS = ("tone-train", "tone-heldout")


def _rows(name: str) -> list[dict]:
    with gzip.open(bundled_path(name), "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _script():
    """scripts/build_tone_data.py as a module (registered first: its dataclasses look it up)."""
    if "build_tone_data" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "build_tone_data", REPO / "scripts" / "build_tone_data.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["build_tone_data"]


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict]]:
    return {name: _rows(name) for name in SPLITS}


@pytest.fixture(scope="module")
def loaded():
    return {name: load_pairs([bundled_path(name)], LoadOptions()) for name in SPLITS}


def test_every_record_validates_into_one_pair(rows, loaded):
    for name in SPLITS:
        result = loaded[name]
        assert result.defects == [] and result.records_rejected == 0, name
        assert result.dropped_duplicates == [] and result.dropped_identical == [], name
        assert len(result.pairs) == result.records_read == len(rows[name]), name
        assert {p.provenance.meta("domain") for p in result.pairs} == {r["domain"] for r in
                                                                       rows[name]}


def test_size_domains_and_system_prompts(rows):
    every = rows["tone-train"] + rows["tone-heldout"]
    assert len(every) >= 600
    assert len({r["domain"] for r in every}) >= 10
    assert len({(r["domain"], r["topic"]) for r in every}) >= 50
    with_system = [r for r in every if r["Template"] != ["CUSTOM"]]
    assert 0.2 <= len(with_system) / len(every) <= 0.6
    assert all(r["company"] in r["Template"][0] for r in with_system)


def test_multi_turn_records_share_their_earlier_turns(rows):
    for name in SPLITS:
        multi = [r for r in rows[name] if len(r["User"]) > 1]
        assert len(multi) / len(rows[name]) >= 0.15, name
        for r in multi:
            assert r["Accepted"][:-1] == r["Rejected"][:-1], r["id"]
            assert r["Accepted"][-1] != r["Rejected"][-1], r["id"]


def test_every_pair_is_length_balanced_in_words_and_characters(loaded):
    """Longer by at most 25%, in the direction the record's `rejected_length` names."""
    for name in SPLITS:
        for pair in loaded[name].pairs:
            kind = pair.provenance.meta("rejected_length")
            for measure in (lambda text: len(text.split()), len):
                chosen, rejected = measure(pair.chosen), measure(pair.rejected)
                assert (rejected < chosen) == (kind == "shorter") and rejected != chosen, \
                    pair.provenance.pair_id
                assert max(chosen, rejected) <= 1.25 * min(chosen, rejected), \
                    pair.provenance.pair_id


def test_accepted_is_the_longer_reply_in_exactly_half_of_each_split(loaded):
    for name in SPLITS:
        kinds = Counter(p.provenance.meta("rejected_length") for p in loaded[name].pairs)
        assert kinds["shorter"] == kinds["longer"] == len(loaded[name].pairs) // 2, name


def test_the_audit_finds_no_length_bias_and_no_leakage(loaded):
    train, heldout = loaded["tone-train"], loaded["tone-heldout"]
    report = audit(train, fingerprint_pairs(train.pairs), eval_pairs=heldout.pairs)
    assert report.length_bias.unit == "characters"
    assert report.length_bias.length_only_accuracy == pytest.approx(0.5)
    assert report.leakage.leaked_pairs == 0
    assert report.flags == ()


@pytest.mark.slow
def test_the_audit_finds_no_length_bias_in_smollm2_tokens(loaded, smollm2_tokenizer):
    """In tokens too: padded bureaucratic prose packs more characters into a token than chatty
    prose, so the sources were written to be longer in tokens as well (the script checks it)."""
    for name in SPLITS:
        result = loaded[name]
        lengths = token_lengths(result.pairs, smollm2_tokenizer)
        report = audit(result, fingerprint_pairs(result.pairs), lengths=lengths, max_length=512)
        assert report.length_bias.length_only_accuracy == pytest.approx(0.5), name
        assert report.length_bias.length_only_accuracy < LENGTH_ONLY_ACCURACY_FLAG
        assert report.truncation.response_truncated == 0 and report.flags == (), name


def test_no_domain_topic_is_on_both_sides(rows):
    topics = {name: {(r["domain"], r["topic"]) for r in rows[name]} for name in SPLITS}
    assert topics["tone-train"].isdisjoint(topics["tone-heldout"])
    assert {d for d, _ in topics["tone-heldout"]} == {d for d, _ in topics["tone-train"]}


def test_contact_details_are_fictional(rows):
    script = _script()
    texts = [text for name in SPLITS for r in rows[name]
             for text in (*r["Template"], *r["User"], *r["Accepted"], *r["Rejected"])]
    assert [p for text in texts for p in script.contact_problems(text)] == []
    assert any("555-01" in text for text in texts) and any(".example" in text for text in texts)


def test_the_contact_check_catches_real_looking_details():
    script = _script()
    assert script.contact_problems("Write to help@bank.com or call 020 7946 0958.") == [
        "address 'help@bank.com' is not *.example", "phone '020 7946 0958' is not 555-01xx",
        "web name 'bank.com': use *.example"]
    assert script.contact_problems("Call 555-0142, code 48213975, help@x.example") == []


def test_the_files_are_what_the_script_builds_from_the_sources(rows):
    """No hand edits and no drift: the bundled records equal a fresh build of the sources."""
    script = _script()
    splits, problems = script.build(REPO / "scripts" / "tone_data")
    assert problems == []
    assert splits["train"] == rows["tone-train"] and splits["heldout"] == rows["tone-heldout"]


def test_the_script_rejects_an_unbalanced_pair():
    script = _script()
    accepted = "I'm sorry about that, and I've refunded the £5 fee to your card today."
    assert script.length_problems(accepted, "Refunded.", "shorter") != []  # far too short
    assert script.length_problems(accepted, accepted + " Extra words here.", "shorter") != []
    balanced = "The £5 fee has been refunded to your card today, as requested."
    assert script.length_problems(accepted, balanced, "shorter") == []
