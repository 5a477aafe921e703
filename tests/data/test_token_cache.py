"""The token cache: a hit gives exactly the uncached split; each key part misses; damage rebuilds."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from prefalign.config import config_from_dict
from prefalign.data import token_arrays
from prefalign.data.tokenizer import CACHE_ENV
from prefalign.trainers.dpo.data import prepare_splits
from run_helpers import pair_rows
from tiny import build_tiny_tokenizer

FILES = Path(__file__).parent / "files"
LONG = "word " * 200  # over max_length 128 with any prompt: truncated or dropped


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch) -> Path:
    """A cache of this test's own, so hits and misses depend on nothing else."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    return cache


def _sources(tmp_path: Path) -> list[str]:
    """TRL pairs (a long one, an exact duplicate), Accepted/Rejected records with ids, turns and
    metadata, and PKU-SafeRLHF rows: every provenance field and several warnings."""
    rows = pair_rows(30)
    rows[3] = {**rows[3], "chosen": LONG}
    rows.append(dict(rows[0]))
    trl = tmp_path / "data" / "trl.jsonl"
    trl.parent.mkdir(parents=True, exist_ok=True)
    trl.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    accepted_rejected = shutil.copy(FILES / "ar_valid.jsonl", tmp_path / "data")
    pku = tmp_path / "data" / "pku.jsonl"  # its third row is invalid on purpose
    pku.write_text("".join((FILES / "pku_small.jsonl").read_text().splitlines(True)[:2]))
    return [str(trl), str(accepted_rejected), str(pku)]


def _config(sources: list[str], **data: object):
    section = {"train": sources, "eval": sources[1:], "max_length": 128, **data}
    return config_from_dict({"data": section, "run": {"seed": 3}})


def _same_split(cached, plain) -> None:
    assert list(cached.tokenized) == plain.tokenized
    assert list(cached.pairs) == plain.pairs
    assert [p.provenance for p in cached.pairs] == [p.provenance for p in plain.pairs]
    assert cached.fingerprint == plain.fingerprint
    assert cached.counts == plain.counts
    assert cached.warnings == plain.warnings


@pytest.mark.parametrize("data", [{"on_overflow": "truncate", "length_balance": True},
                                  {"on_overflow": "drop", "limit_train": 20, "limit_eval": 3}])
def test_cold_and_warm_splits_equal_the_uncached_split(tmp_path, tiny_tokenizer, data):
    sources = _sources(tmp_path)
    plain = prepare_splits(_config(sources, cache_tokenized=False, **data), tiny_tokenizer)
    cold = prepare_splits(_config(sources, **data), tiny_tokenizer)
    warm = prepare_splits(_config(sources, **data), tiny_tokenizer)
    for name in ("train", "eval"):
        assert plain[name].token_cache is None
        assert cold[name].token_cache["hit"] is False and warm[name].token_cache["hit"] is True
        assert cold[name].token_cache["key"] == warm[name].token_cache["key"]
        _same_split(cold[name], plain[name])
        _same_split(warm[name], plain[name])
        assert warm[name].describe()["token_cache"] == warm[name].token_cache
    assert plain["train"].warnings  # the duplicate (and in "drop", the over-length pair)
    assert plain["train"].counts["prompt_truncated"] + plain["train"].counts[
        "response_truncated"] + plain["train"].counts["dropped_overflow"] > 0


def test_cache_off_writes_nothing(tmp_path, tiny_tokenizer, own_cache):
    prepare_splits(_config(_sources(tmp_path), cache_tokenized=False), tiny_tokenizer)
    assert not (own_cache / "tokenized").exists()


def _hit(tokenizer, sources, **data) -> bool:
    return prepare_splits(_config(sources, **data), tokenizer)["train"].token_cache["hit"]


def test_each_key_part_misses_and_the_same_input_hits(tmp_path):
    sources = _sources(tmp_path)
    tokenizer = build_tiny_tokenizer()
    assert not _hit(tokenizer, sources)
    assert _hit(build_tiny_tokenizer(), sources)  # an equal tokenizer
    other_template = build_tiny_tokenizer(tokenizer.chat_template.replace("<|im_start|>system",
                                                                          "<|im_start|>system "))
    assert not _hit(other_template, sources)
    grown = build_tiny_tokenizer()
    grown.add_tokens(["Thank you"])
    assert not _hit(grown, sources)
    assert not _hit(tokenizer, sources, max_length=100)
    assert not _hit(tokenizer, sources, max_length=128, max_prompt_length=40)
    assert not _hit(tokenizer, sources, on_overflow="drop")
    assert not _hit(tokenizer, sources, format="auto", preference_axis="safer")
    assert _hit(tokenizer, sources)  # shuffling and limits are not key parts
    assert _hit(tokenizer, sources, limit_train=5, length_balance=True)


def test_changed_bytes_miss_and_a_rewrite_with_the_same_bytes_hits(tmp_path, tiny_tokenizer):
    sources = _sources(tmp_path)
    trl = Path(sources[0])
    original = trl.read_bytes()
    assert not _hit(tiny_tokenizer, sources)
    trl.write_bytes(original.replace(b"Thank you", b"Thanks you", 1))
    changed = prepare_splits(_config(sources), tiny_tokenizer)["train"]
    assert changed.token_cache["hit"] is False
    assert any("Thanks you" in p.chosen for p in changed.pairs)
    trl.write_bytes(original)  # new mtime, same bytes
    assert _hit(tiny_tokenizer, sources)


def _entry(cache: Path) -> Path:
    (entry,) = (cache / "tokenized").iterdir()
    return entry


@pytest.mark.parametrize("damage", ["flip a token byte", "cut meta.json", "drop an array"])
def test_a_damaged_entry_is_reported_in_one_line_and_rebuilt(
    tmp_path, tiny_tokenizer, own_cache, caplog, damage
):
    sources = _sources(tmp_path)[:1]
    config = _config(sources, eval=[])
    plain = prepare_splits(_config(sources, eval=[], cache_tokenized=False), tiny_tokenizer)
    prepare_splits(config, tiny_tokenizer)
    entry = _entry(own_cache)
    if damage == "flip a token byte":
        tokens = bytearray((entry / "tokens.npy").read_bytes())
        tokens[-1] ^= 1
        (entry / "tokens.npy").write_bytes(bytes(tokens))
    elif damage == "cut meta.json":
        meta = entry / "meta.json"
        meta.write_text(meta.read_text()[:40])
    else:
        (entry / "flags.npy").unlink()
    with caplog.at_level(logging.WARNING, logger="prefalign.data.token_cache"):
        rebuilt = prepare_splits(config, tiny_tokenizer)["train"]
    (notice,) = [r.getMessage() for r in caplog.records]
    assert "unusable" in notice and "rebuilding" in notice and "\n" not in notice
    assert rebuilt.token_cache["hit"] is False
    _same_split(rebuilt, plain["train"])
    assert prepare_splits(config, tiny_tokenizer)["train"].token_cache["hit"] is True


@pytest.mark.parametrize("failure", [OSError("No space left on device"), KeyboardInterrupt()])
def test_a_write_that_fails_midway_leaves_no_entry(
    tmp_path, tiny_tokenizer, own_cache, monkeypatch, failure
):
    sources = _sources(tmp_path)[:1]
    config = _config(sources, eval=[])
    save = token_arrays._save

    def failing_save(path, array):
        if path.name == "text.npy":  # after the token arrays were written
            raise failure
        save(path, array)

    monkeypatch.setattr(token_arrays, "_save", failing_save)
    if isinstance(failure, OSError):
        split = prepare_splits(config, tiny_tokenizer)["train"]  # a cache it cannot write
        assert split.token_cache["hit"] is False and len(split) == 30  # only costs speed
    else:
        with pytest.raises(KeyboardInterrupt):
            prepare_splits(config, tiny_tokenizer)
    assert list((own_cache / "tokenized").iterdir()) == []  # nor a staging directory
    monkeypatch.setattr(token_arrays, "_save", save)
    assert prepare_splits(config, tiny_tokenizer)["train"].token_cache["hit"] is False
    assert prepare_splits(config, tiny_tokenizer)["train"].token_cache["hit"] is True


def test_a_hit_restores_the_rejects_file_and_names_it(tmp_path, tiny_tokenizer):
    broken = shutil.copy(FILES / "trl_broken.jsonl", tmp_path / "broken.jsonl")
    sources = [_sources(tmp_path)[0], str(broken)]
    config = _config(sources, eval=[], on_error="skip")
    first, second = tmp_path / "run1", tmp_path / "run2"
    for run_dir in (first, second):
        run_dir.mkdir()
    cold = prepare_splits(config, tiny_tokenizer, rejects_dir=first)["train"]
    warm = prepare_splits(config, tiny_tokenizer, rejects_dir=second)["train"]
    assert warm.token_cache["hit"] is True
    rejects = (second / "train-rejects.jsonl").read_text(encoding="utf-8")
    assert rejects == (first / "train-rejects.jsonl").read_text(encoding="utf-8") != ""
    assert any(str(second / "train-rejects.jsonl") in w for w in warm.warnings)
    assert warm.warnings == [w.replace(str(first), str(second)) for w in cold.warnings]
    # without a rejects directory the warning differs, so it is another entry
    assert prepare_splits(config, tiny_tokenizer)["train"].token_cache["hit"] is False


def test_lazy_rows_behave_like_the_list(tmp_path, tiny_tokenizer):
    sources = _sources(tmp_path)[:1]
    plain = prepare_splits(_config(sources, eval=[], cache_tokenized=False), tiny_tokenizer)
    prepare_splits(_config(sources, eval=[]), tiny_tokenizer)
    lazy = prepare_splits(_config(sources, eval=[]), tiny_tokenizer)["train"].tokenized
    items = plain["train"].tokenized
    assert isinstance(lazy, token_arrays.TokenizedPairs)
    assert len(lazy) == len(items) == 30
    assert lazy[0] == items[0] and lazy[-1] == items[-1] and lazy[7] == items[7]
    assert lazy[3:9] == items[3:9] and lazy[::-4] == items[::-4] and lazy[40:] == []
    assert list(reversed(lazy)) == items[::-1]
    assert lazy.take([5, 2, 5]) == [items[5], items[2], items[5]]
    assert items[4] in lazy and lazy.index(items[4]) == 4 and lazy.count(items[4]) == 1
    assert lazy != items[:-1] and lazy != items[::-1]
    with pytest.raises(IndexError):
        lazy[30]
    with pytest.raises(TypeError):
        hash(lazy)
