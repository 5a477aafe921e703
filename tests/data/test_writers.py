"""Writing pairs as records: exact shapes, round trips through every format, atomic writes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from prefalign.data.load import LoadOptions, load_pairs
from prefalign.data.types import Message, PreferencePair, Provenance
from prefalign.data.writers import to_record, write_jsonl_atomic, write_pairs

FILES = Path(__file__).parent / "files"
REAL = Path("/work/shared/data/external/hh-rlhf-harmless-base/test.jsonl")
INPUTS = ["ar_valid.jsonl", "ar_array.json", "trl_standard.jsonl", "trl_conversational.jsonl",
          "hh_small.jsonl", "pku_small.jsonl", "bom.jsonl"]


def _pair(*prompt: Message, record_id: str | None = None, turn: int | None = None) -> PreferencePair:
    origin = Provenance("x.jsonl", 3, record_id=record_id, turn=turn, metadata=(("category", "c"),))
    return PreferencePair(tuple(prompt), "good", "bad", origin)


def test_trl_record_shape():
    pair = _pair(Message("system", "s"), Message("user", "q"), record_id="r", turn=2)
    assert to_record(pair, "trl") == {
        "category": "c",
        "id": "r#turn2",
        "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }


def test_accepted_rejected_record_puts_history_in_both_lists():
    pair = _pair(Message("user", "u0"), Message("assistant", "a0"), Message("user", "u1"), record_id="r")
    assert to_record(pair, "accepted_rejected") == {
        "category": "c",
        "id": "r",
        "Template": ["CUSTOM"],
        "User": ["u0", "u1"],
        "Accepted": ["a0", "good"],
        "Rejected": ["a0", "bad"],
    }


def test_formats_that_cannot_hold_a_prompt_say_why():
    double = _pair(Message("user", "u0"), Message("user", "u1"))
    with pytest.raises(ValueError, match="alternate user/assistant .* got roles user/user"):
        to_record(double, "accepted_rejected")
    with pytest.raises(ValueError, match="read back as the model's default"):
        to_record(_pair(Message("system", "CUSTOM"), Message("user", "q")), "accepted_rejected")
    with pytest.raises(ValueError, match="trl_text needs a prompt of one user message"):
        to_record(_pair(Message("system", "s"), Message("user", "q")), "trl_text")
    with pytest.raises(ValueError, match="cannot write format 'csv'"):
        to_record(double, "csv")


@pytest.mark.parametrize("out_format", ["trl", "accepted_rejected"])
@pytest.mark.parametrize("name", INPUTS)
def test_round_trip_gives_equal_pairs_and_labels(tmp_path, name, out_format):
    original = load_pairs(FILES / name, LoadOptions(on_error="skip")).pairs  # pku row 3 is a tie
    out = tmp_path / "out.jsonl"
    assert write_pairs(original, out, out_format) == len(original)
    again = load_pairs(out)
    assert again.format_by_source == {str(out): out_format}
    assert again.pairs == original  # prompt, chosen and rejected (provenance is not compared)
    for before, after in zip(original, again.pairs, strict=True):
        assert dict(after.provenance.metadata).items() >= {
            (k, v) for k, v in before.provenance.metadata
            if k not in ("better_response_id", "safer_response_id")}


def test_trl_text_round_trip(tmp_path):
    original = load_pairs(FILES / "trl_standard.jsonl").pairs
    write_pairs(original, tmp_path / "out.jsonl", "trl_text")
    assert load_pairs(tmp_path / "out.jsonl").pairs == original


@pytest.mark.skipif(not REAL.is_file(), reason="real hh-rlhf test split not present")
def test_real_hh_pairs_round_trip_through_trl(tmp_path):
    original = load_pairs(REAL, LoadOptions(on_error="skip")).pairs
    write_pairs(original, tmp_path / "hh.jsonl.gz", "trl")
    again = load_pairs(tmp_path / "hh.jsonl.gz")
    assert again.pairs == original and len(original) == 2308
    assert sum(p.provenance.meta("diverged_early") == "true" for p in again.pairs) == 5


def test_atomic_write_leaves_the_old_file_when_records_fail_midway(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"old": true}\n', encoding="utf-8")

    def records():
        yield {"n": 1}
        raise RuntimeError("broken generator")

    with pytest.raises(RuntimeError, match="broken generator"):
        write_jsonl_atomic(records(), out)
    assert out.read_text(encoding="utf-8") == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temp file left


def test_conversion_that_cannot_express_a_pair_writes_nothing(tmp_path):
    pairs = [_pair(Message("user", "q")), _pair(Message("user", "u0"), Message("user", "u1"))]
    out = tmp_path / "out.jsonl"
    with pytest.raises(ValueError):
        write_pairs(pairs, out, "accepted_rejected")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_gzip_output_and_unicode(tmp_path):
    out = tmp_path / "nested" / "out.jsonl.gz"
    assert write_jsonl_atomic([{"text": "café ☕"}, {"n": 2}], out) == 2
    lines = gzip.decompress(out.read_bytes()).decode("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"text": "café ☕"}, {"n": 2}]
    assert "café ☕" in lines[0]  # written as UTF-8, not \\u escapes
