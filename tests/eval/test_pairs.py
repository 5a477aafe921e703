"""Held-out pair summaries: hand-computed accuracy, slices, worst pairs; scoring keeps order."""

from __future__ import annotations

import pytest
import torch

from prefalign.data.tokenize import TruncationOptions
from prefalign.data.types import Message, PreferencePair, Provenance
from prefalign.engine.forward.packed import score_tokenized_pairs
from prefalign.eval.pairs import (
    PairSet,
    ScoredPairs,
    category_of,
    load_pair_set,
    score_pair_set,
    summarise,
)
from prefalign.losses import PairLogps, make_loss
from run_helpers import write_pairs
from tiny_models import tiny_llama


def _pair(i: int, turns: int = 1, category: str | None = None) -> PreferencePair:
    prompt = []
    for t in range(turns):
        prompt += [Message("user", f"q{i}.{t}")]
        if t < turns - 1:
            prompt += [Message("assistant", "a")]
    meta = (("category", category),) if category else ()
    return PreferencePair(tuple(prompt), f"good {i}", f"bad {i}", Provenance("f", i + 1, None,
                                                                               None, meta))


def _scored() -> ScoredPairs:
    """Four pairs; reference margins 0; policy changes chosen by (+1, −1, +2, 0) and rejected
    by (0, 0, −1, +3): DPO reward margins β·(1, −1, 3, −3) with β = 0.5."""
    pairs = [_pair(0), _pair(1), _pair(2, turns=2), _pair(3, category="violence")]
    data = PairSet(pairs, [None] * 4, ["a.jsonl", "a.jsonl", "b.jsonl", "b.jsonl"])  # type: ignore[list-item]
    reference = PairLogps(torch.full((4,), -10.0), torch.full((4,), -10.0),
                          torch.tensor([3, 5, 4, 6]), torch.tensor([5, 3, 4, 2]))
    policy = PairLogps(torch.tensor([-9.0, -11.0, -8.0, -10.0]),
                       torch.tensor([-10.0, -10.0, -11.0, -7.0]),
                       torch.tensor([3, 5, 4, 6]), torch.tensor([5, 3, 4, 2]))
    return ScoredPairs(data, reference, policy)


def test_summary_by_hand():
    summary = summarise(_scored(), make_loss("dpo", beta=0.5))
    overall = summary["overall"]
    assert overall["n"] == 4
    assert overall["accuracy"] == 0.5  # pairs 0 and 2 right
    assert overall["margin"] == pytest.approx(0.0)  # 0.5·(1 − 1 + 3 − 3) / 4
    assert overall["chosen_logp_change"] == pytest.approx(0.5)  # (1 − 1 + 2 + 0) / 4
    assert overall["rejected_logp_change"] == pytest.approx(0.5)  # (0 + 0 − 1 + 3) / 4
    assert overall["both_fall"] == 0.0
    # lengths (3,5) (5,3) (4,4) (6,2): shorter-chosen 1 right of 1, longer-chosen 0 of 2
    assert overall["length_balanced_accuracy"] == pytest.approx(0.5)
    columns = summary["per_pair"]
    assert columns["reward_margin"] == pytest.approx([0.5, -0.5, 1.5, -1.5])
    assert columns["correct"] == [True, False, True, False]
    assert columns["category"] == ["single-turn", "single-turn", "multi-turn", "violence"]


def test_slices_split_the_pairs_by_source_and_category():
    slices = summarise(_scored(), make_loss("dpo", beta=0.5))["slices"]
    assert {k: (v["n"], v["accuracy"]) for k, v in slices["source"].items()} == {
        "a.jsonl": (2, 0.5), "b.jsonl": (2, 0.5)}
    assert {k: v["n"] for k, v in slices["category"].items()} == {
        "multi-turn": 1, "single-turn": 2, "violence": 1}
    assert slices["category"]["violence"]["accuracy"] == 0.0


def test_worst_pairs_are_the_wrong_ones_most_negative_first():
    worst = summarise(_scored(), make_loss("dpo", beta=0.5))["worst_pairs"]
    assert [row["pair_id"] for row in worst] == ["f:4", "f:2"]
    assert worst[0]["margin"] == pytest.approx(-1.5)
    assert worst[0]["policy_margin_logp"] == pytest.approx(-3.0)
    assert worst[0]["reference_margin_logp"] == pytest.approx(0.0)
    assert worst[0]["prompt"] == "q3.0" and worst[0]["chosen"] == "good 3"


def test_category_of_prefers_the_pairs_own_category():
    assert category_of(_pair(0, category="fraud")) == "fraud"
    assert category_of(_pair(0, turns=3)) == "multi-turn"


def test_load_pair_set_samples_with_a_seed_and_keeps_file_order(tmp_path, tiny_tokenizer):
    path = write_pairs(tmp_path / "p.jsonl", 20)
    options = TruncationOptions(128)
    first = load_pair_set([str(path)], tiny_tokenizer, options, max_pairs=7, seed=3)
    again = load_pair_set([str(path)], tiny_tokenizer, options, max_pairs=7, seed=3)
    other = load_pair_set([str(path)], tiny_tokenizer, options, max_pairs=7, seed=4)
    lines = [p.provenance.line for p in first.pairs]
    assert len(first) == 7 and lines == sorted(lines)
    assert lines == [p.provenance.line for p in again.pairs]
    assert lines != [p.provenance.line for p in other.pairs]
    assert first.sources == [str(path)] * 7
    everything = load_pair_set([str(path)], tiny_tokenizer, options, max_pairs=None, seed=0)
    assert len(everything) == 20


def test_scoring_in_length_order_returns_pairs_in_input_order(tmp_path, tiny_tokenizer):
    data = load_pair_set([str(write_pairs(tmp_path / "p.jsonl", 11))], tiny_tokenizer,
                         TruncationOptions(128), max_pairs=None, seed=0)
    model = tiny_llama(tiny_tokenizer)
    scored = score_pair_set(model, data, batch_size=3)
    with torch.no_grad():
        direct = [score_tokenized_pairs(model, [pair]) for pair in data.tokenized]
    assert scored.chosen.tolist() == pytest.approx([d.chosen.item() for d in direct], rel=1e-5)
    assert scored.rejected.tolist() == pytest.approx([d.rejected.item() for d in direct],
                                                     rel=1e-5)
    assert scored.chosen_count.tolist() == [len(p.chosen_ids) for p in data.tokenized]
