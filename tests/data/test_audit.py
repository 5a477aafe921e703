"""Audit numbers on a hand-made set whose statistics are worked out by hand below."""

from __future__ import annotations

import math

import pytest

from prefalign.data.audit import audit, format_audit, leakage, length_bias, truncation_impact
from prefalign.data.fingerprint import fingerprint_pairs
from prefalign.data.load import LoadOptions, load_pairs

HAND_MADE = [
    {"prompt": "Hello there", "chosen": "xxxx", "rejected": "yy"},
    {"prompt": "Hello there", "chosen": "xxxxxx", "rejected": "yyy"},
    {"prompt": "Second", "chosen": "x", "rejected": "yyyyy"},
    {"prompt": "Third", "chosen": "xx", "rejected": "zz"},
    {"prompt": "Hello there", "chosen": "xxxx", "rejected": "yy"},  # exact duplicate of row 0
    {"prompt": "Fourth", "chosen": "same", "rejected": "same"},  # chosen == rejected
]


@pytest.fixture()
def report():
    loaded = load_pairs(HAND_MADE, LoadOptions(format="trl"))
    return audit(loaded, fingerprint_pairs(loaded.pairs))


def test_counts_and_drops(report):
    assert report.pairs == 4
    assert report.duplicate_records_dropped == 1
    assert report.identical_pairs_dropped == 1
    assert report.repeated_prompts == 1  # "Hello there" kept twice


def test_length_bias_by_hand(report):
    """Kept chosen lengths [4, 6, 1, 2], rejected [2, 3, 5, 2] characters.

    diffs [2, 3, -4, 0]: longer 2/4, shorter 1/4, equal 1/4; mean 1/4 = 0.25; median (0+2)/2 = 1.
    mean_c = 13/4 = 3.25, mean_r = 12/4 = 3.0.
    var_c = (0.75² + 2.75² + 2.25² + 1.25²)/3 = 14.75/3 = 4.91667; var_r = (1 + 0 + 4 + 1)/3 = 2.
    d = 0.25 / sqrt((4.91667 + 2)/2) = 0.25 / 1.859659 = 0.134433.
    Length-only accuracy: "prefer longer" wins 2/4, ties count half: 0.5 + 0.25/2 = 0.625 -> flagged.
    """
    bias = report.length_bias
    assert bias.unit == "characters"
    assert (bias.frac_chosen_longer, bias.frac_chosen_shorter, bias.frac_equal) == (0.5, 0.25, 0.25)
    assert bias.mean_difference == pytest.approx(0.25)
    assert bias.median_difference == pytest.approx(1.0)
    assert bias.cohens_d == pytest.approx(0.134433, abs=1e-6)
    assert bias.length_only_rule == "prefer longer"
    assert bias.length_only_accuracy == pytest.approx(0.625)
    assert any(flag.startswith("length bias") for flag in report.flags)


def test_balanced_set_raises_no_length_flag():
    """diffs [+1, -1]: each rule wins half, so length alone scores 50%: no flag; d = 0."""
    bias = length_bias([3, 2], [2, 3], "tokens")
    assert bias.length_only_accuracy == 0.5
    assert bias.cohens_d == 0.0


def test_truncation_impact_by_hand():
    """max_length 32, prompt budget 16; (prompt, chosen, rejected) tokens:
    (10,5,3): 15 fits.  (30,10,2): 40 over; prompt 30->16; 16+10 = 26 fits.
    (8,20,1): 28 fits.  (60,5,5): over; prompt 60->16; 21 fits.
    (20,30,4): 50 over; prompt 20->16; 16+30 = 46 > 32 -> loses response tokens.
    => over 3, prompt cut 3, response cut 1.
    """
    lengths = [(10, 5, 3), (30, 10, 2), (8, 20, 1), (60, 5, 5), (20, 30, 4)]
    impact = truncation_impact(lengths, max_length=32, max_prompt_length=16)
    assert (impact.over_length, impact.prompt_truncated, impact.response_truncated) == (3, 3, 1)


def test_leakage_normalises_whitespace_and_case():
    train = load_pairs(HAND_MADE[:4], LoadOptions(format="trl")).pairs
    evaluation = load_pairs([{"prompt": "  hello   THERE ", "chosen": "a", "rejected": "b"}],
                            LoadOptions(format="trl")).pairs
    leak = leakage(train, evaluation)
    assert (leak.eval_prompts, leak.leaked_pairs, leak.leaked_prompts) == (1, 2, 1)


def test_audit_with_token_lengths_reports_truncation():
    loaded = load_pairs(HAND_MADE[:4], LoadOptions(format="trl"))
    lengths = [(10, 5, 3), (30, 10, 2), (8, 20, 1), (60, 5, 5)]
    report = audit(loaded, "f" * 64, lengths=lengths, max_length=32, max_prompt_length=16)
    assert report.length_bias.unit == "tokens"
    assert report.truncation.over_length == 2
    assert report.truncation.response_truncated == 0
    table = format_audit(report)
    assert "fingerprint" in table and "f" * 64 in table


def test_report_is_json_serialisable(report):
    import json

    data = json.loads(json.dumps(report.to_dict()))
    assert data["length_bias"]["length_only_accuracy"] == 0.625
    assert not math.isnan(data["length_bias"]["cohens_d"])
