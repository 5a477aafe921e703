"""The streaming path against the in-memory one: same pairs, counts, defects, warnings and audit."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from prefalign.data.audit import AuditCollector, audit
from prefalign.data.audit_stats import leakage
from prefalign.data.fingerprint import PairFingerprint, fingerprint_pairs
from prefalign.data.load import LoadOptions, load_pairs, stream_pairs, validate
from prefalign.data.scan import content_digest
from prefalign.data.tokenize import token_lengths
from prefalign.data.types import DataError, Message, PreferencePair, Provenance

FILES = Path(__file__).parent / "files"

MESSY = [FILES / name for name in ("ar_broken.jsonl", "trl_standard.jsonl", "duplicates.jsonl",
                                   "ar_valid.jsonl", "mixed.jsonl", "invalid_utf8.jsonl",
                                   "hh_small.jsonl", "pku_small.jsonl")]
SKIP = LoadOptions(on_error="skip")


def _rows(seed: int, count: int) -> list[dict]:
    """Rows with repeated prompts (whitespace and case varied), duplicates and chosen == rejected."""
    rng = random.Random(seed)
    prompts = [f"Question number {i}?" for i in range(count // 3)]
    rows = []
    for _ in range(count):
        prompt = rng.choice(prompts)
        prompt = prompt.upper() if rng.random() < 0.2 else f"  {prompt} " if rng.random() < 0.2 else prompt
        chosen = "c" * rng.randint(1, 30)
        rows.append({"prompt": prompt, "chosen": chosen,
                     "rejected": chosen if rng.random() < 0.05 else "r" * rng.randint(1, 30)})
        if rng.random() < 0.1:
            rows.append(dict(rows[rng.randrange(len(rows))]))  # an exact duplicate
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _summary_fields(result):
    return (result.defects, result.format_by_source, result.records_read, result.records_rejected,
            result.warnings)


def test_stream_gives_what_load_pairs_gives_on_messy_files(tmp_path):
    loaded = load_pairs(MESSY, SKIP, rejects_path=tmp_path / "loaded.jsonl")
    stream = stream_pairs(MESSY, SKIP, rejects_path=tmp_path / "streamed.jsonl")
    assert list(stream) == loaded.pairs
    summary = stream.summary
    warnings = [w.replace("streamed.jsonl", "loaded.jsonl") for w in summary.warnings]
    assert (summary.defects, summary.format_by_source, summary.records_read,
            summary.records_rejected, warnings) == _summary_fields(loaded)
    assert summary.pairs_kept == len(loaded.pairs)
    assert summary.identical_dropped == len(loaded.dropped_identical) > 0
    assert summary.duplicates_dropped == len(loaded.dropped_duplicates) > 0
    assert (tmp_path / "streamed.jsonl").read_bytes() == (tmp_path / "loaded.jsonl").read_bytes()


def test_validate_only_stream_never_raises_and_writes_nothing(tmp_path):
    stream = stream_pairs(MESSY, LoadOptions(), rejects_path=tmp_path / "r.jsonl", validate_only=True)
    pairs = list(stream)
    expected = validate(MESSY)
    assert pairs == expected.pairs
    assert _summary_fields(stream.summary) == _summary_fields(expected)
    assert not (tmp_path / "r.jsonl").exists()


def test_raising_stream_ends_with_the_same_error_as_load_pairs():
    sources = [FILES / "ar_broken.jsonl", FILES / "trl_standard.jsonl"]
    with pytest.raises(DataError) as loaded:
        load_pairs(sources)
    stream = stream_pairs(sources)
    yielded = []
    with pytest.raises(DataError) as streamed:
        for pair in stream:
            yielded.append(pair)
    assert str(streamed.value) == str(loaded.value)
    assert len(yielded) == 3  # pairs came before the end, where the error is raised


def test_a_stream_is_read_once_and_its_summary_waits_for_the_end():
    stream = stream_pairs(FILES / "trl_standard.jsonl")
    with pytest.raises(RuntimeError, match="once every pair has been read"):
        _ = stream.summary
    list(stream)
    with pytest.raises(RuntimeError, match="can be read once"):
        list(stream)


def test_a_missing_file_fails_before_anything_is_read(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        stream_pairs([FILES / "trl_standard.jsonl", tmp_path / "missing.jsonl"])


def test_an_abandoned_stream_leaves_the_rejects_file_as_it_was(tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    rejects.write_text("stale\n", encoding="utf-8")
    pairs = iter(stream_pairs(FILES / "ar_broken.jsonl", SKIP, rejects_path=rejects))
    next(pairs)
    pairs.close()
    assert rejects.read_text(encoding="utf-8") == "stale\n"
    assert [p.name for p in tmp_path.iterdir()] == ["rejects.jsonl"]


def test_dedupe_by_digest_matches_dedupe_by_content_on_generated_rows(tmp_path):
    rows = _rows(seed=1, count=400)
    path = _write(tmp_path / "gen.jsonl", rows)
    stream = stream_pairs(path)
    streamed = list(stream)
    # The plain rule, written out: first occurrence of each content kept, identical ones dropped.
    seen, expected = set(), []
    for row in rows:
        key = (row["prompt"], row["chosen"], row["rejected"])
        if row["chosen"] != row["rejected"] and key not in seen:
            seen.add(key)
            expected.append(key)
    assert [(p.prompt[0].content, p.chosen, p.rejected) for p in streamed] == expected
    assert stream.summary.duplicates_dropped + stream.summary.identical_dropped + len(expected) == len(rows)


def test_content_digest_separates_where_the_texts_split():
    """Joined by newlines alone, "x\\ny" + "z" and "x" + "y\\nz" would hash the same text."""
    base = Provenance("mem", 1)
    a = PreferencePair((Message("user", "x\ny"),), "z", "d", base)
    b = PreferencePair((Message("user", "x"),), "y\nz", "d", base)
    c = PreferencePair((Message("user", "x"), Message("user", "y")), "z", "d", base)
    d = PreferencePair((Message("user", "x"),), "z", "y\nd", base)
    again = PreferencePair((Message("user", "x\ny"),), "z", "d", Provenance("other", 9))
    assert len({content_digest(p) for p in (a, b, c, d)}) == 4
    assert content_digest(a) == content_digest(again)  # provenance is not content


def test_streamed_audit_equals_the_in_memory_audit(tmp_path):
    train = _write(tmp_path / "train.jsonl", _rows(seed=2, count=300))
    evaluation = _write(tmp_path / "eval.jsonl", _rows(seed=3, count=40))
    loaded, eval_loaded = load_pairs(train), load_pairs(evaluation)
    expected = audit(loaded, fingerprint_pairs(loaded.pairs), eval_pairs=eval_loaded.pairs)

    collector, fingerprint = AuditCollector(), PairFingerprint()
    stream = stream_pairs(train)
    for pair in stream:
        collector.add(pair)
        fingerprint.add(pair)
    report = collector.report(stream.summary, fingerprint.hexdigest(),
                              eval_pairs=stream_pairs(evaluation))
    assert report.to_dict() == expected.to_dict()
    assert report.repeated_prompts > 0 and report.leakage.leaked_pairs > 0
    assert report.duplicate_records_dropped > 0 and report.identical_pairs_dropped > 0


def test_streamed_token_audit_in_small_batches_equals_one_batch(tmp_path, tiny_tokenizer):
    """Tokenising 7 pairs at a time gives the lengths of tokenising all pairs at once."""
    path = _write(tmp_path / "train.jsonl", _rows(seed=4, count=60))
    loaded = load_pairs(path)
    lengths = token_lengths(loaded.pairs, tiny_tokenizer)
    expected = audit(loaded, "f" * 64, lengths=lengths, max_length=40, max_prompt_length=12)

    collector = AuditCollector(tiny_tokenizer, batch_pairs=7)
    stream = stream_pairs(path)
    for pair in stream:
        collector.add(pair)
    report = collector.report(stream.summary, "f" * 64, max_length=40, max_prompt_length=12)
    assert report.to_dict() == expected.to_dict()
    assert report.length_bias.unit == "tokens" and report.truncation.over_length > 0


def test_leakage_examples_are_the_first_distinct_prompts_in_order():
    """Six leaked prompts p0..p5 (p2 twice in train, p4 twice in eval): 7 leaked pairs, 6 distinct
    prompts, the examples are the first five keys in sorted order."""
    def pairs(prompts):
        return [PreferencePair((Message("user", p),), "a", "b", Provenance("mem", i))
                for i, p in enumerate(prompts)]

    train = pairs(["p5", "p2", "p0", "p2", "p3", "p1", "p4", "unseen"])
    evaluation = pairs(["P4", "p0", "p4 ", "p1", "p2", "p3", "p5", "other"])
    leak = leakage(train, evaluation)
    assert (leak.eval_prompts, leak.leaked_pairs, leak.leaked_prompts) == (7, 7, 6)
    assert leak.examples == tuple(f"user: p{i}" for i in range(5))
