"""summary.md and the terminal headline: the report's numbers, formatted the same way, with
missing sections named; and the number formatters they share with report.html."""

from __future__ import annotations

import copy
import math

import pytest

from eval.report_fixture import build_results
from prefalign.eval.formatting import as_number, fmt_ci, fmt_count, fmt_num, fmt_pct, fmt_rate
from prefalign.eval.summary import format_headline, render_summary


@pytest.fixture(scope="module")
def results():
    return build_results()


@pytest.mark.parametrize("value, expected", [
    (0.5, 0.5), (3, 3.0), ("0.25", 0.25), (None, None), (math.nan, None), ("nan", None),
    (math.inf, None), ("-inf", None), (True, None), ("text", None), ([1], None)])
def test_as_number(value, expected):
    assert as_number(value) == expected


def test_formatters():
    """0.58 → "58.0%"; its interval [0.52, 0.64] printed once with a single % at the end."""
    assert fmt_pct(0.58) == "58.0%"
    assert fmt_ci(0.58, 0.52, 0.64) == "58.0% [52.0–64.0%]"
    assert fmt_ci(0.58, None, 0.64) == "58.0%"
    assert fmt_ci(None, None, None) == "—"
    assert fmt_num(-0.2, signed=True) == "-0.20" and fmt_num(1.5, 1, signed=True) == "+1.5"
    assert fmt_count(200.0) == "200" and fmt_count(None) == "—"
    assert fmt_rate({"n": 100, "rate": 0.4, "low": 0.31, "high": 0.5}) == \
        "40.0% [31.0–50.0%] (n=100)"
    assert fmt_rate({"n": 0, "rate": None, "low": None, "high": None}) == "— (n=0)"
    assert fmt_rate(None) == "—"


def test_summary_has_the_headline_numbers(results):
    text = render_summary(results)
    overall = results["heldout"]["overall"]
    harmful = results["generation"]["harmful"]
    for line in (
            "# prefalign eval — demo",
            "- Policy: `demo-out/runs/demo/final`",
            "- Decoding: greedy, temperature 1.0, top-p 1.0, 64 new tokens, seed 0",
            f"| Implicit-reward accuracy | {100 * overall['accuracy']:.1f}% |",
            f"| Length-only baseline (the better of: prefer the shorter / the longer reply) | "
            f"{100 * overall['length_only_accuracy']:.1f}% |",
            f"| Pairs where both log-probs fall | {100 * overall['both_fall']:.1f}% |",
            f"| Refusal rate on harmful prompts (higher is safer) | {fmt_rate(harmful['reference'])}"
            f" | {fmt_rate(harmful['policy'])} |",
            "| Perplexity of held-out chosen replies (n=60) | 8.10 | 8.30 |",
            "| KL(policy ‖ reference) per response (n=64) | — | 1.90 ± 0.30 |",
            "| Accuracy under the plain template"):
        assert line in text, line
    assert "Not measured" not in text


def test_summary_names_missing_sections(results):
    partial = copy.deepcopy(results)
    del partial["generation"], partial["cost"]
    partial["run"]["name"] = "a|b"
    text = render_summary(partial)
    assert text.count("Not measured.") == 2
    assert "# prefalign eval — a|b" in text  # a heading, not a table cell
    empty = render_summary({})
    assert empty.count("Not measured.") == 3 and "- Run: not recorded" in empty


def test_markdown_cells_escape_pipes(results):
    piped = copy.deepcopy(results)
    piped["heldout"]["template_robustness"]["template"] = "x|y"
    assert "the x\\|y template" in render_summary(piped)


def test_format_headline(results):
    lines = format_headline(results).splitlines()
    overall = results["heldout"]["overall"]
    assert len(lines) == 5
    assert lines[0].startswith(f"held-out accuracy {fmt_pct(overall['accuracy'])} on 60 pairs "
                               f"(length-only {fmt_pct(overall['length_only_accuracy'])}, "
                               "length-balanced ")
    assert lines[1].startswith(
        f"log-prob change vs reference: chosen {overall['chosen_logp_change']:+.2f}, "
        f"rejected {overall['rejected_logp_change']:+.2f}")
    assert lines[2].startswith("refusal on harmful prompts: reference 50.0% [")
    assert "→ policy 20.0%" in lines[3] and lines[3].startswith("over-refusal on benign prompts")
    assert lines[4] == "KL(policy‖reference) 1.90 ± 0.30 per response; " \
                       "held-out chosen perplexity 8.10 → 8.30"
    assert format_headline({}).splitlines() == ["held-out pairs: not measured",
                                                "refusal and over-refusal: not measured"]
