"""report.html and summary.md of `prefalign rm eval`: every section, its figures, escaping, and
what an evaluation without a DPO run or calibration says instead."""

from __future__ import annotations

import re

from eval.reward_report_fixture import HOSTILE, build_metrics_rows, build_reward_results
from prefalign.eval.outputs import json_safe
from prefalign.eval.report_html import CSP
from prefalign.eval.reward_report import render_reward_report, write_reward_report
from prefalign.eval.reward_summary import format_reward_headline, render_reward_summary


def test_the_full_report_has_every_section_and_figure():
    html = render_reward_report(json_safe(build_reward_results()), build_metrics_rows())
    for anchor in ("headline", "training", "pairs", "calibration", "dpo", "failures"):
        assert f'id="{anchor}"' in html
    images = re.findall(r'<img src="data:image/png;base64,', html)
    assert len(images) == 5 and 'data-plots="5"' in html
    assert CSP.replace("'", "&#x27;") in html and "<script" not in html
    assert "Length-balanced accuracy (95% CI)" in html and "By source" in html
    assert "Expected calibration error (10 bins)" in html and "DPO implicit reward" in html


def test_hostile_text_is_shown_not_run():
    results = build_reward_results()
    results["pairs"]["worst_pairs"][0]["chosen"] = HOSTILE
    html = render_reward_report(json_safe(results), [])
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in html
    assert "<img src=x" not in html


def test_what_was_not_measured_is_said():
    results = build_reward_results(dpo=False)
    results["calibration"] = {"note": "not measured: fewer than 2 pairs"}
    html = render_reward_report(json_safe(results), [])
    assert 'data-plots="2"' in html  # scores and lengths; no curves, reliability or DPO
    assert "not measured: no --dpo run" in html and "fewer than 2 pairs" in html
    summary = render_reward_summary(json_safe(results))
    assert "Not measured (no --dpo run)." in summary and "fewer than 2 pairs" in summary


def test_summary_and_terminal_lines_show_the_report_numbers(tmp_path):
    results = json_safe(build_reward_results())
    summary = render_reward_summary(results)
    overall = results["pairs"]["overall"]
    assert f"| Reward accuracy (r⁺ > r⁻) | {100 * overall['accuracy']:.1f}% |" in summary
    assert "### By source" in summary and "| heldout.jsonl | 30 |" in summary
    headline = format_reward_headline(results)
    assert f"on {overall['n']} pairs" in headline and "ECE" in headline and "DPO" in headline
    path = write_reward_report(tmp_path, results, build_metrics_rows())
    assert path.name == "report.html" and path.stat().st_size > 10_000
