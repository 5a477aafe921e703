"""report.html in headless Chromium (Debian `chromium` + `chromium-driver`, via selenium): it
loads from a file:// URL, every promised figure decodes and renders, no script runs, the
console stays free of errors, and a folded long text opens without JavaScript.

`make test` installs Chromium where it can (`make browser`); where it cannot, these tests skip
and say why. A full-page screenshot is saved beside the report for a human to look at.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest

from eval.report_fixture import build_generations, build_metrics_rows, build_results
from prefalign.eval.report import write_report
from prefalign.eval.report_html import CSP

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARGUMENTS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-quic", "--window-size=1280,1400")
LOAD_TIMEOUT_S = 60


def _skip_reason() -> str | None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        return (f"{' and '.join(missing)} not found: install the Debian packages chromium and "
                f"chromium-driver (`make browser` does, as root or with sudo)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    """One headless Chromium for the module, with a fresh profile directory."""
    reason = _skip_reason()
    if reason:
        print(f"SKIP Chromium report test: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for argument in (*ARGUMENTS, f"--user-data-dir={profile}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(LOAD_TIMEOUT_S)
    yield browser
    browser.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _load(driver, path: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.as_uri())
    WebDriverWait(driver, LOAD_TIMEOUT_S).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && "
        "Array.from(document.images).every(image => image.complete)"))


def _severe_console_entries(driver) -> list[dict]:
    try:
        entries = driver.get_log("browser")
    except Exception:  # noqa: BLE001 - some driver builds do not offer the log; nothing to check
        return []
    return [entry for entry in entries if entry.get("level") == "SEVERE"]


def _check_page(driver, path: Path, expected_plots: int) -> None:
    _load(driver, path)
    assert driver.title == "prefalign eval — demo"
    promised = int(driver.find_element("tag name", "body").get_attribute("data-plots"))
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.naturalWidth, i.naturalHeight, i.alt])")
    assert promised == len(images) == expected_plots
    for width, height, alt in images:
        assert width > 0 and height > 0, f"figure {alt!r} did not decode"
    assert driver.execute_script("return document.scripts.length") == 0
    policy = driver.execute_script(
        "return document.querySelector('meta[http-equiv=Content-Security-Policy]').content")
    assert policy == CSP
    assert _severe_console_entries(driver) == []


def _full_page_screenshot(driver, target: Path) -> Path:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(int(height) + 100, 16000))
    driver.save_screenshot(str(target))
    driver.set_window_size(1280, 1400)
    return target


def test_full_report_renders_with_its_plots(driver, tmp_path):
    path = write_report(tmp_path, build_results(), build_metrics_rows(), build_generations())
    _check_page(driver, path, expected_plots=5)
    hostile = driver.find_element("xpath", "//td[div[contains(., \"<script>alert('pwned')\")]]")
    assert "<img src=x onerror=alert(1)>" in hostile.text  # shown as text, not run
    shot = _full_page_screenshot(driver, tmp_path / "report.png")
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_long_text_opens_without_script(driver, tmp_path):
    path = write_report(tmp_path, build_results(), [], [])
    _load(driver, path)
    details = driver.find_element("css selector", "#failures details")
    full_text = details.find_element("css selector", "div.text")
    assert not full_text.is_displayed()
    details.find_element("tag name", "summary").click()
    assert details.get_attribute("open") is not None and full_text.is_displayed()


def test_partial_report_promises_only_what_it_draws(driver, tmp_path):
    results = build_results()
    del results["generation"], results["cost"]
    path = write_report(tmp_path, copy.deepcopy(results), [], [])
    _check_page(driver, path, expected_plots=3)
    assert "not measured" in driver.find_element("id", "refusal").text
