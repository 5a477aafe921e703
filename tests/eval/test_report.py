"""report.html from a schema-following eval.json: every figure a decodable PNG, hostile text
escaped, nothing loaded from outside, missing sections named, written atomically."""

from __future__ import annotations

import base64
import copy
import re

import pytest

from eval.report_fixture import build_generations, build_metrics_rows, build_results
from prefalign.eval.report import CAPTIONS, REPORT, render_report, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">')


def _plots_promised(page: str) -> int:
    return int(re.search(r'<body data-plots="(\d+)">', page).group(1))


@pytest.fixture(scope="module")
def results():
    return build_results()


@pytest.fixture(scope="module")
def full_page(results):
    return render_report(results, build_metrics_rows(), build_generations())


def test_every_plot_is_an_embedded_png(full_page):
    images = IMG.findall(full_page)
    assert len(images) == _plots_promised(full_page) == len(CAPTIONS) == 5
    assert full_page.count("<img") == len(images)
    assert {alt for _, alt in images} == {alt for alt, _ in CAPTIONS.values()}
    for encoded, alt in images:
        assert base64.b64decode(encoded, validate=True).startswith(PNG_MAGIC), alt
    assert full_page.count("<figcaption>") == len(images)


def test_hostile_text_is_escaped(full_page):
    """The <script> and <img onerror> in a harmful response arrive as text, not markup."""
    assert "<script" not in full_page.lower()
    assert "<img src=x" not in full_page
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in full_page
    assert "&amp; &quot;quotes&quot;" in full_page


def test_hostile_names_and_keys_are_escaped(results):
    hostile = copy.deepcopy(results)
    hostile["run"]["name"] = "<b>run</b>"
    hostile["heldout"]["slices"]["category"]["<i>cat</i>"] = {"n": 1, "accuracy": 1.0}
    page = render_report(hostile, [], [])
    assert "<title>prefalign eval — &lt;b&gt;run&lt;/b&gt;</title>" in page
    assert "&lt;i&gt;cat&lt;/i&gt;" in page and "<i>cat" not in page


def test_self_contained(full_page):
    """No script, stylesheet link or remote URL; a CSP forbids them anyway."""
    assert "<link" not in full_page
    assert not re.search(r'(src|href)="(?!data:image/png;base64,|#)', full_page)
    assert ('<meta http-equiv="Content-Security-Policy" content="default-src &#x27;none&#x27;; '
            'img-src data:;') in full_page


def test_header_and_headline(full_page, results):
    overall = results["heldout"]["overall"]
    for text in ("<title>prefalign eval — demo</title>", "smollm2-135m-instruct",
                 "demo-out/runs/demo/final", "sha256:" + "a" * 64, "b" * 64, "c" * 64,
                 "greedy; temperature=1.0, top_p=1.0, max_new_tokens=64",
                 "Length-only baseline", f"{100 * overall['accuracy']:.1f}%",
                 f"{100 * overall['length_only_accuracy']:.1f}%",
                 f"{100 * overall['length_balanced_accuracy']:.1f}% "
                 f"[{100 * overall['length_balanced_accuracy_low']:.1f}–"
                 f"{100 * overall['length_balanced_accuracy_high']:.1f}%]",
                 "By category", "harmless-base", "helpful-base", "Template robustness",
                 "Over-refusal rate on benign prompts", "Precision 95.0%, recall 93.0%",
                 "KL(policy ‖ reference)", "Worst held-out pairs"):
        assert text in full_page, text
    assert "not measured" not in full_page


def test_long_text_folds_into_details(full_page, results):
    rejected = results["heldout"]["worst_pairs"][0]["rejected"]
    assert len(rejected) > 300
    assert f"show all {len(rejected)} characters" in full_page
    assert f'<div class="text">{rejected}</div></details>' in full_page


def test_missing_sections_say_not_measured(results):
    partial = copy.deepcopy(results)
    del partial["generation"], partial["cost"], partial["heldout"]["template_robustness"]
    page = render_report(partial, [], [])
    assert _plots_promised(page) == len(IMG.findall(page)) == 3  # margins, scatter, lengths
    for text in ("Training curves</h2>", "Template robustness</h2>", "Refusal and over-refusal</h2>",
                 "Cost of alignment</h2>"):
        section = page.split(text, 1)[1].split("</section>", 1)[0]
        assert "not measured" in section, text
    assert "Figures not drawn for lack of data: training curves, refusal bars." in page


def test_empty_results_render():
    page = render_report({}, [], [])
    assert "<title>prefalign eval — unnamed run</title>" in page
    assert _plots_promised(page) == 0 and "<img" not in page
    assert page.count("not measured") >= 6


def test_nulls_render_as_dashes(results):
    """eval.json may hold null for any float (a CI with n=0); nothing crashes, "—" shows."""
    nulls = copy.deepcopy(results)
    nulls["heldout"]["overall"] = {key: None for key in nulls["heldout"]["overall"]}
    nulls["generation"]["benign"]["policy"] = {"n": 0, "rate": None, "low": None, "high": None,
                                               "by_category": {}}
    nulls["heldout"]["per_pair"]["chosen_change"][0] = None
    page = render_report(nulls, build_metrics_rows(), [])
    assert "<td class=\"num\">—</td>" in page
    assert _plots_promised(page) == len(IMG.findall(page)) == 5


def test_write_report_is_atomic(tmp_path, results):
    (tmp_path / REPORT).write_text("old")
    path = write_report(tmp_path, results, build_metrics_rows(), build_generations())
    assert path == tmp_path / REPORT
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == [REPORT]  # no temp file left behind
