"""The data fingerprint: content- and order-sensitive, independent of file name and format."""

from __future__ import annotations

import json

from prefalign.data.fingerprint import fingerprint_pairs
from prefalign.data.load import LoadOptions, load_pairs

ROWS = [
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
    {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Lyon"},
]


def test_same_pairs_from_jsonl_and_json_array_match(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    array = tmp_path / "b.json"
    array.write_text(json.dumps(ROWS), encoding="utf-8")
    from_jsonl = load_pairs([jsonl]).pairs
    from_array = load_pairs([array]).pairs
    assert fingerprint_pairs(from_jsonl) == fingerprint_pairs(from_array)


def test_content_order_and_options_change_it():
    pairs = load_pairs(ROWS, LoadOptions(format="trl")).pairs
    base = fingerprint_pairs(pairs)
    assert len(base) == 64
    assert fingerprint_pairs(list(reversed(pairs))) != base
    assert fingerprint_pairs(pairs, {"max_length": 512}) != base
    edited = [dict(ROWS[0], chosen="four"), ROWS[1]]
    assert fingerprint_pairs(load_pairs(edited, LoadOptions(format="trl")).pairs) != base
