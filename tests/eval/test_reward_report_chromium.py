"""`prefalign rm eval`'s report.html in headless Chromium, as `prefalign eval`'s is checked
(test_report_chromium.py): every promised figure decodes, no script runs, the console stays
free of errors, a long text opens without JavaScript. Skips, saying why, without Chromium."""

from __future__ import annotations

from eval.reward_report_fixture import build_metrics_rows, build_reward_results
from eval.test_report_chromium import _load, _severe_console_entries, driver  # noqa: F401
from prefalign.eval.outputs import json_safe
from prefalign.eval.report_html import CSP
from prefalign.eval.reward_report import write_reward_report


def test_reward_report_renders_with_its_plots(driver, tmp_path):  # noqa: F811
    path = write_reward_report(tmp_path, json_safe(build_reward_results()), build_metrics_rows())
    _load(driver, path)
    assert driver.title == "prefalign rm eval — rm-demo"
    promised = int(driver.find_element("tag name", "body").get_attribute("data-plots"))
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.naturalWidth, i.naturalHeight, i.alt])")
    assert promised == len(images) == 5
    for width, height, alt in images:
        assert width > 0 and height > 0, f"figure {alt!r} did not decode"
    assert driver.execute_script("return document.scripts.length") == 0
    policy = driver.execute_script(
        "return document.querySelector('meta[http-equiv=Content-Security-Policy]').content")
    assert policy == CSP
    assert _severe_console_entries(driver) == []


def test_a_long_worst_pair_opens_without_script(driver, tmp_path):  # noqa: F811
    results = json_safe(build_reward_results())
    results["pairs"]["worst_pairs"][0]["chosen"] = "A long reply. " * 60
    _load(driver, write_reward_report(tmp_path, results, []))
    details = driver.find_element("css selector", "#failures details")
    full_text = details.find_element("css selector", "div.text")
    assert not full_text.is_displayed()
    details.find_element("tag name", "summary").click()
    assert details.get_attribute("open") is not None and full_text.is_displayed()
