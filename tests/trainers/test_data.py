"""Training splits: shuffling, length balance, limits, fingerprints, and the batch order."""

from __future__ import annotations

import json

import pytest
import torch

from prefalign.config import ConfigError, config_from_dict
from prefalign.data.tokenize import TokenizedPair
from prefalign.trainers.dpo.data import length_balance, length_sign, make_batch, prepare_splits
from prefalign.trainers.loop.batches import epoch_permutation, micro_batch_indices, steps_per_epoch
from run_helpers import pair_rows, write_pairs


def _config(tmp_path, n_train=24, rows=None, seed=0, **data):
    train = write_pairs(tmp_path / "train.jsonl", n_train, rows=rows)
    heldout = write_pairs(tmp_path / "eval.jsonl", rows=pair_rows(36)[24:])
    section = {"train": [str(train)], "eval": [str(heldout)], "max_length": 128, **data}
    return config_from_dict({"data": section, "run": {"seed": seed}})


def test_train_split_is_shuffled_by_seed_and_eval_keeps_file_order(tmp_path, tiny_tokenizer):
    splits = prepare_splits(_config(tmp_path), tiny_tokenizer)
    train, heldout = splits["train"], splits["eval"]
    assert len(train) == 24 and len(heldout) == 12
    assert [p.pair_id for p in train.tokenized] == [p.provenance.pair_id for p in train.pairs]
    lines = [p.provenance.line for p in train.pairs]
    assert sorted(lines) == list(range(1, 25)) and lines != sorted(lines)
    assert [p.provenance.line for p in heldout.pairs] == list(range(1, 13))
    again = prepare_splits(_config(tmp_path), tiny_tokenizer)["train"]
    assert again.fingerprint == train.fingerprint
    reseeded = prepare_splits(_config(tmp_path / "b", seed=1), tiny_tokenizer)["train"]
    assert reseeded.fingerprint != train.fingerprint
    assert train.counts["chosen_shorter"] + train.counts["chosen_longer"] + \
        train.counts["same_length"] == 24


def test_limits_and_truncation_change_the_fingerprint(tmp_path, tiny_tokenizer):
    base = prepare_splits(_config(tmp_path), tiny_tokenizer)
    limited = prepare_splits(_config(tmp_path, limit_train=10, limit_eval=5), tiny_tokenizer)
    assert len(limited["train"]) == 10 and len(limited["eval"]) == 5
    # limit_train keeps the first N after the (same) shuffle; limit_eval the first N in file order
    assert [p.pair_id for p in limited["train"].tokenized] == \
        [p.pair_id for p in base["train"].tokenized[:10]]
    assert limited["eval"].pairs == base["eval"].pairs[:5]
    assert limited["train"].counts["left_out_by_limit"] == 14
    shorter = prepare_splits(_config(tmp_path, max_length=100), tiny_tokenizer)
    assert shorter["eval"].fingerprint != base["eval"].fingerprint


def test_length_balance_by_hand():
    """signs -1 -1 +1 0 -1 +1 -1: couples (0,2) and (1,5), equal-length pair 3; the shorter
    pairs 4 and 6 have no longer partner. limit 4 takes both couples; limit 3 takes the first
    couple, skips the second (4 > 3) and fills the last slot with the equal-length pair."""
    signs = [-1, -1, 1, 0, -1, 1, -1]
    assert length_balance(signs) == [0, 1, 2, 3, 5]
    assert length_balance(signs, limit=4) == [0, 1, 2, 5]
    assert length_balance(signs, limit=3) == [0, 2, 3]
    assert length_balance([1, 1, 1]) == []


def test_length_balanced_split_has_equal_groups(tmp_path, tiny_tokenizer):
    rows = pair_rows(24)
    for row in rows[:8]:  # make the chosen reply the shorter one in most pairs
        row["chosen"] = "Yes."
    split = prepare_splits(_config(tmp_path, rows=rows, length_balance=True), tiny_tokenizer)
    train = split["train"]
    assert train.counts["chosen_shorter"] == train.counts["chosen_longer"] > 0
    assert train.counts["left_out_by_balance"] > 0
    assert any("length_balance" in w for w in train.warnings)
    limited = prepare_splits(_config(tmp_path, rows=rows, length_balance=True, limit_train=7),
                             tiny_tokenizer)["train"]
    signs = [length_sign(p) for p in limited.tokenized]
    assert len(signs) in (6, 7) and signs.count(-1) == signs.count(1)


def test_dropped_over_length_pairs_stay_aligned(tmp_path, tiny_tokenizer):
    rows = pair_rows(6)
    rows[2]["chosen"] = "very long " * 80
    for row in rows:  # one id for all: alignment cannot rely on ids alone
        row["id"] = "same"
    config = _config(tmp_path, rows=rows, on_overflow="drop")
    train = prepare_splits(config, tiny_tokenizer)["train"]
    assert len(train) == 5 and train.counts["dropped_overflow"] == 1
    assert all("very long" not in p.chosen for p in train.pairs)
    for pair, tokens in zip(train.pairs, train.tokenized, strict=True):
        decoded = tiny_tokenizer.decode(list(tokens.chosen_ids), skip_special_tokens=True)
        assert decoded.strip() == pair.chosen


def test_an_empty_split_is_refused(tmp_path, tiny_tokenizer):
    rows = [{"prompt": "q", "chosen": "long " * 200, "rejected": "x"}]
    with pytest.raises(ConfigError, match="data.train: no pairs left"):
        prepare_splits(_config(tmp_path, rows=rows, on_overflow="drop"), tiny_tokenizer)


def test_rejects_go_to_the_rejects_dir(tmp_path, tiny_tokenizer):
    rows = [*pair_rows(4), {"prompt": "q", "chosen": "a"}]
    config = _config(tmp_path, rows=rows, on_error="skip")
    splits = prepare_splits(config, tiny_tokenizer, rejects_dir=tmp_path / "run")
    assert len(splits["train"]) == 4 and splits["train"].warnings
    rejected = (tmp_path / "run" / "train-rejects.jsonl").read_text().splitlines()
    assert len(rejected) == 1 and json.loads(rejected[0])["line"] == 5


def test_epoch_permutations_are_seeded_per_epoch():
    first = epoch_permutation(10, seed=3, epoch=0)
    assert torch.equal(first, epoch_permutation(10, seed=3, epoch=0))
    assert sorted(first.tolist()) == list(range(10))
    assert not torch.equal(first, epoch_permutation(10, seed=3, epoch=1))
    assert not torch.equal(first, epoch_permutation(10, seed=4, epoch=0))


def test_a_step_takes_the_same_pairs_however_it_is_split():
    """20 pairs, global batch 8: 2 steps per epoch, the last 4 pairs wait for another epoch.
    8 × 1, 2 × 4 and two processes of 2 × 2 all cover permutation[8:16] at step 1."""
    permutation = epoch_permutation(20, seed=0, epoch=0)
    assert steps_per_epoch(20, 8) == 2
    whole = micro_batch_indices(permutation, 1, batch_size=8, grad_accum=1)
    accumulated = micro_batch_indices(permutation, 1, batch_size=2, grad_accum=4)
    processes = [micro_batch_indices(permutation, 1, batch_size=2, grad_accum=2, rank=r,
                                     world_size=2) for r in (0, 1)]
    assert [len(m) for m in accumulated] == [2, 2, 2, 2]
    assert torch.equal(whole[0], permutation[8:16])
    assert torch.equal(torch.cat(accumulated), permutation[8:16])
    assert torch.equal(torch.cat(processes[0] + processes[1]), permutation[8:16])
    with pytest.raises(IndexError):
        micro_batch_indices(permutation, 2, batch_size=8, grad_accum=1)


def test_make_batch_adds_the_split_positions(tiny_tokenizer):
    pairs = [TokenizedPair("a", (1, 2), (3, 4), (5,)), TokenizedPair("b", (1,), (6,), (7, 8, 9))]

    class Split:
        tokenized = pairs

    batch = make_batch(Split, [1, 0], pad_token_id=0)  # type: ignore[arg-type]
    assert batch["index"].tolist() == [1, 0] and batch["index"].dtype == torch.long
    assert batch["chosen_input_ids"].tolist() == [[1, 6, 0, 0], [1, 2, 3, 4]]
