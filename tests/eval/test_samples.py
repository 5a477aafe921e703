"""Replies before and after: the sample conversations (distinct prompts of preference pairs,
seeded), both models' greedy replies on a tiny real Llama, and their table in report.html."""

from __future__ import annotations

import json

import pytest

from eval.report_fixture import build_results
from prefalign.cli.eval import options_from_args
from prefalign.cli.main import build_parser
from prefalign.data.types import DataError, Message
from prefalign.eval.generate import DecodeSettings, generate
from prefalign.eval.report import render_report
from prefalign.eval.runner import EvalOptions
from prefalign.eval.samples import answer_samples, load_samples
from tiny_models import tiny_llama

SYSTEM = "You are the help desk of Example Ltd."
RECORDS = [  # two pairs share the first prompt (as the tone set's shorter / longer pairs do)
    {"id": "a-short", "Template": ["CUSTOM"], "User": ["Where is my parcel?"],
     "Accepted": ["Sorry! It arrives today."], "Rejected": ["Today."]},
    {"id": "a-long", "Template": ["CUSTOM"], "User": ["Where is my parcel?"],
     "Accepted": ["Sorry! It arrives today."], "Rejected": ["Please be advised it is today."]},
    {"id": "b", "Template": [SYSTEM], "User": ["My bill is wrong.", "It says £90, not £9."],
     "Accepted": ["Let me check.", "You're right, I've fixed it to £9."],
     "Rejected": ["Let me check.", "The bill stands."]},
    {"id": "c", "Template": ["CUSTOM"], "User": ["Can I cancel?"],
     "Accepted": ["Yes, it's cancelled now."], "Rejected": ["Cancelled."]},
]


@pytest.fixture()
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in RECORDS))
    return path


def test_each_distinct_prompt_once_in_file_order(pairs_file):
    samples = load_samples([str(pairs_file)], 10)
    assert [s.id for s in samples] == ["a-short", "b#turn1", "c"]
    assert samples[0].chosen == "Sorry! It arrives today."
    assert samples[1].messages == (Message("system", SYSTEM), Message("user", "My bill is wrong."),
                                   Message("assistant", "Let me check."),
                                   Message("user", "It says £90, not £9."))
    assert {s.source for s in samples} == {str(pairs_file)}


def test_a_seeded_subset_kept_in_file_order(pairs_file):
    everything = load_samples([str(pairs_file)], 10)
    two = load_samples([str(pairs_file)], 2, seed=3)
    assert two == load_samples([str(pairs_file)], 2, seed=3)
    assert len(two) == 2 and two == [s for s in everything if s in two]
    assert load_samples([str(pairs_file)], 0) == []
    with pytest.raises(ValueError, match="count"):
        load_samples([str(pairs_file)], -1)


def test_invalid_records_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(RECORDS[0]) + "\n" + json.dumps({"User": ["hi"]}) + "\n")
    with pytest.raises(DataError) as error:
        load_samples([str(bad)], 5)
    assert f"{bad}:2" in str(error.value)


def test_the_tone_heldout_set_gives_one_conversation_per_item():
    """110 held-out pairs, two per customer message (rejected shorter / longer): 55 prompts."""
    samples = load_samples(["bundled:tone-heldout"], 1000)
    assert len(samples) == 55
    assert sum(len([m for m in s.messages if m.role == "user"]) > 1 for s in samples) == 22


@pytest.fixture(scope="module")
def models(tiny_tokenizer):
    return {"reference": tiny_llama(tiny_tokenizer, initializer_range=0.2, seed=1),
            "policy": tiny_llama(tiny_tokenizer, initializer_range=0.2, seed=2)}


def test_both_models_answer_every_conversation(models, tiny_tokenizer, pairs_file):
    samples = load_samples([str(pairs_file)], 10)
    settings = DecodeSettings(max_new_tokens=5, batch_size=2)
    section = answer_samples(models, tiny_tokenizer, samples, settings)
    assert section["n"] == 3 and section["decoding"]["max_new_tokens"] == 5
    rows = section["rows"]
    assert rows[1]["system"] == SYSTEM and rows[0]["system"] is None
    assert rows[1]["history"] == [{"role": "user", "content": "My bill is wrong."},
                                  {"role": "assistant", "content": "Let me check."}]
    assert rows[1]["prompt"] == "It says £90, not £9."
    for name, model in models.items():
        alone = generate(model, tiny_tokenizer, [s.messages for s in samples],
                         DecodeSettings(max_new_tokens=5))
        assert [row[f"{name}_response"] for row in rows] == [g.text for g in alone]
        assert all(row[f"{name}_tokens"] <= 5 for row in rows)
    assert [row["reference_response"] for row in rows] != [row["policy_response"] for row in rows]


def test_report_shows_the_replies_side_by_side_escaped():
    results = build_results()
    results["samples"] = {"decoding": {"do_sample": False, "max_new_tokens": 128}, "n": 1,
                          "rows": [{"id": "x/1", "source": "s", "system": SYSTEM, "history": [],
                                    "prompt": "Why <b>this</b>?", "chosen": "Because & so.",
                                    "reference_response": "No.", "policy_response": "Sorry!",
                                    "reference_hit_max": True, "policy_hit_max": False}]}
    page = render_report(results, [], [])
    assert 'id="samples"' in page and "Replies, before and after" in page
    assert "Why &lt;b&gt;this&lt;/b&gt;?" in page and "Because &amp; so." in page
    assert page.index("No.") < page.index("Sorry!") < page.index("Because &amp; so.")
    assert page.count("(cut at the token limit)") == 1
    del results["samples"]
    assert "not measured: no --samples given" in render_report(results, [], [])


def test_cli_options_and_their_checks():
    args = build_parser().parse_args(["eval", "run", "--out", "o", "--samples", "a.jsonl",
                                      "bundled:tone-heldout", "--max-samples", "3",
                                      "--sample-max-new-tokens", "40"])
    options = options_from_args(args)
    assert options.samples == ("a.jsonl", "bundled:tone-heldout") and options.max_samples == 3
    assert options.sample_decoding.max_new_tokens == 40
    assert options.sample_decoding.batch_size == options.decoding.batch_size
    with pytest.raises(ValueError, match="max_samples"):
        EvalOptions(max_samples=-1)
    with pytest.raises(ValueError, match="sample_max_new_tokens"):
        EvalOptions(sample_max_new_tokens=0)
