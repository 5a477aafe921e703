"""report.html: eval.json and the run's metrics.jsonl as one self-contained page.

Sections follow issue 5 §3: the run and its settings, the held-out headline (accuracy always beside
the length baselines), training curves, held-out details and slices, template robustness, refusal
and over-refusal, both models' replies to the same conversations (`--samples`), the cost of
alignment, and the failures to read. A section missing from eval.json renders as a "not measured"
line; every figure is an embedded PNG.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefalign.atomic import write_text_atomic
from prefalign.eval import plots
from prefalign.eval.formatting import (
    MISSING,
    UNNAMED,
    as_number,
    cost_rows,
    fmt_ci,
    fmt_count,
    fmt_num,
    fmt_pct,
    fmt_rate,
    headline_rows,
    refusal_rows,
    section,
)
from prefalign.eval.report_html import (
    Raw,
    figure,
    inline_dict,
    join,
    key_values,
    long_text,
    missing,
    page,
    table,
    tag,
)
from prefalign.eval.report_html import section as html_section
from prefalign.eval.report_samples import samples_section

REPORT = "report.html"
LIST_LIMIT = 25  # rows shown per failure list
# key -> (alt text, caption) for each figure plots.draw_all may return
CAPTIONS = {
    "training_curves": ("Training curves", "Training curves from metrics.jsonl: loss, reward "
                        "accuracy, reward margin and the chosen/rejected log-prob change against "
                        "the reference, per step (train: raw and rolling mean; eval: markers)."),
    "margin_histogram": ("Margin histograms", "Held-out log-prob margin log π(chosen) − "
                         "log π(rejected) per pair under the reference and the policy; vertical "
                         "lines are the means. Training should move the policy's mass right."),
    "logp_shift": ("Log-prob shift scatter", "Per held-out pair: change of the chosen (x) and "
                   "rejected (y) log-prob, policy − reference. Below the dashed diagonal the "
                   "reward margin is positive; the shaded quadrant is where both fall."),
    "refusal_bars": ("Refusal bars", "Refusal rate on harmful prompts (higher is safer) and "
                     "over-refusal rate on benign prompts (lower is better), reference beside "
                     "policy, with 95% intervals."),
    "lengths": ("Length distributions", "Token lengths of held-out chosen and rejected replies, "
                "and of the responses each model generated (the verbosity trap)."),
}
_METRIC_COLUMNS = ("n", "accuracy", "length-only", "length-balanced (95% CI)", "reward margin",
                   "chosen Δlogp", "rejected Δlogp", "both fall")


def render_report(results: Mapping[str, Any], metrics_rows: Sequence[Mapping[str, Any]],
                  generations: Sequence[Mapping[str, Any]]) -> str:
    """The report as one HTML document (inline CSS, embedded PNGs, no scripts, no URLs)."""
    drawn = plots.draw_all(results, metrics_rows, generations)
    figures = {key: _figure(key, png) for key, png in drawn.items() if png is not None}
    name = section(results, "run", "name") or UNNAMED
    body = join([
        _header(results, name),
        _headline(results),
        html_section("training", "Training curves",
                     [figures.get("training_curves") or missing("not measured: no metrics.jsonl "
                                                                "rows with loss or accuracy")]),
        _heldout(results, figures),
        _template(results),
        _refusal(results, figures),
        samples_section(results),
        _cost(results, figures),
        _failures(results, generations),
        _footer(results, [key for key, png in drawn.items() if png is None]),
    ])
    return page(f"prefalign eval — {name}", body, plots=len(figures))


def write_report(out_dir: str | os.PathLike[str], results: Mapping[str, Any],
                 metrics_rows: Sequence[Mapping[str, Any]],
                 generations: Sequence[Mapping[str, Any]]) -> Path:
    """Render and write `out_dir/report.html` atomically; returns its path."""
    path = Path(out_dir) / REPORT
    write_text_atomic(render_report(results, metrics_rows, generations), path)
    return path


def _figure(key: str, png: bytes) -> Raw:
    alt, caption = CAPTIONS[key]
    return figure(plots.data_uri(png), alt, caption)


# ---- header --------------------------------------------------------------------------------------

def _header(results: Mapping[str, Any], name: str) -> Raw:
    run = results.get("run") or {}
    created = results.get("created")
    subtitle = (f"{run.get('outcome', 'outcome unknown')} run · {run.get('loss', '?')} "
                f"β={run.get('beta', '?')} · evaluated {created or 'at an unknown time'}")
    nav = tag("nav", join(tag("a", title, href=f"#{anchor}") for anchor, title in (
        ("headline", "Headline"), ("training", "Training"), ("heldout", "Held-out pairs"),
        ("template", "Template"), ("refusal", "Refusal"), ("samples", "Replies"),
        ("cost", "Cost"), ("failures", "Failures"))))
    return join([tag("h1", f"prefalign eval — {name}"), tag("p", subtitle, class_="sub"), nav,
                 tag("div", join([_run_table(run), _models_table(results)]), class_="grid"),
                 _settings(results)])


def _run_table(run: Mapping[str, Any]) -> Raw:
    data = run.get("data") if isinstance(run.get("data"), Mapping) else {}
    fingerprints = [(f"{split} data", Raw(join([tag("div", entry.get("source")),
                                                tag("div", entry.get("fingerprint"),
                                                    class_="mono")])))
                    for split, entries in data.items() for entry in entries or ()
                    if isinstance(entry, Mapping)]
    rows = [("run dir", run.get("run_dir")), ("reference strategy", run.get("reference_strategy")),
            ("code version", run.get("code_version")), *fingerprints]
    body = key_values(rows, mono=["run dir", "code version"]) if run else missing(
        "not recorded: eval.json has no run manifest")
    return tag("div", join([tag("h3", "Run"), body]))


def _models_table(results: Mapping[str, Any]) -> Raw:
    models, run = results.get("models") or {}, results.get("run") or {}
    rows = [(f"{role} model", _model_text(models.get(role))) for role in ("reference", "policy")]
    rows += [("base model source", run.get("model_source")),
             ("base weight hash", run.get("model_weight_hash")),
             ("chat template sha256", run.get("chat_template_sha256"))]
    return tag("div", join([tag("h3", "Models and fingerprints"),
                            key_values(rows, mono=["base weight hash", "chat template sha256"])]))


def _model_text(model: Any) -> str | None:
    if not isinstance(model, Mapping):
        return None
    note = model.get("note")
    return f"{model.get('source', MISSING)}" + (f" ({note})" if note else "")


def _settings(results: Mapping[str, Any]) -> Raw:
    settings = results.get("settings")
    if not isinstance(settings, Mapping):
        return join([tag("h3", "Settings"), missing("not recorded: no decoder settings")])
    rows = [("generation decoding", _decoding(settings.get("decoding"))),
            ("KL sampling", _decoding(settings.get("kl_decoding"))),
            ("KL prompts", settings.get("kl_prompts")),
            ("prompt template", settings.get("template")),
            ("alternate template", settings.get("alternate_template")),
            ("limits", inline_dict({key: settings.get(key) for key in
                                    ("max_pairs", "harmful", "benign", "seed") if key in settings}))]
    elapsed = as_number(results.get("elapsed_seconds"))
    rows.append(("evaluation time", f"{elapsed:.0f} s" if elapsed is not None else None))
    rows.append(("prefalign version", results.get("prefalign_version")))
    return join([tag("h3", "Settings"), key_values(rows)])


def _decoding(decoding: Any) -> str | None:
    if not isinstance(decoding, Mapping):
        return None
    mode = "sampling" if decoding.get("do_sample") else "greedy"
    rest = {key: value for key, value in decoding.items() if key != "do_sample"}
    return f"{mode}; {inline_dict(rest)}"


# ---- held-out pairs ------------------------------------------------------------------------------

def _headline(results: Mapping[str, Any]) -> Raw:
    overall = section(results, "heldout", "overall")
    parts: list[Any] = []
    if isinstance(overall, Mapping):
        parts.append(table(("held-out pairs", "value"), headline_rows(overall), class_="headline",
                           numeric=(1,)))
        sets = section(results, "heldout", "sets") or []
        parts.append(tag("p", "Held-out sets: " + "; ".join(
            f"{entry.get('name')} ({entry.get('pairs', '?')} pairs, fingerprint "
            f"{str(entry.get('fingerprint', '?'))[:16]})" for entry in sets), class_="note"))
    else:
        parts.append(missing("held-out pairs: not measured"))
    generation = results.get("generation")
    if isinstance(generation, Mapping) and refusal_rows(generation):
        parts.append(table(("generation", "reference", "policy"), refusal_rows(generation),
                           class_="headline", numeric=(1, 2)))
    return html_section("headline", "Headline", parts)


def _metric_row(label: str, metrics: Mapping[str, Any]) -> tuple[str, ...]:
    return (label, fmt_count(metrics.get("n")), fmt_pct(metrics.get("accuracy")),
            fmt_pct(metrics.get("length_only_accuracy")),
            fmt_ci(metrics.get("length_balanced_accuracy"),
                   metrics.get("length_balanced_accuracy_low"),
                   metrics.get("length_balanced_accuracy_high")),
            fmt_num(metrics.get("margin"), 3, signed=True),
            fmt_num(metrics.get("chosen_logp_change"), signed=True),
            fmt_num(metrics.get("rejected_logp_change"), signed=True),
            fmt_pct(metrics.get("both_fall")))


def _heldout(results: Mapping[str, Any], figures: Mapping[str, Raw]) -> Raw:
    heldout = results.get("heldout")
    if not isinstance(heldout, Mapping):
        return html_section("heldout", "Held-out pairs", [missing("not measured")])
    parts: list[Any] = [tag("div", join([figures.get("margin_histogram"),
                                         figures.get("logp_shift")]), class_="figrow")]
    if "margin_histogram" not in figures and "logp_shift" not in figures:
        parts = [missing("margin plots not drawn: no per-pair log-probs in eval.json")]
    slices = heldout.get("slices") if isinstance(heldout.get("slices"), Mapping) else {}
    for field, groups in slices.items():
        rows = [_metric_row(str(value), metrics) for value, metrics in (groups or {}).items()
                if isinstance(metrics, Mapping)]
        parts += [tag("h3", f"By {field}"),
                  table((field, *_METRIC_COLUMNS), rows, numeric=range(1, 9))]
    if not slices:
        parts.append(missing("slices: not measured"))
    return html_section("heldout", "Held-out pairs", parts)


def _template(results: Mapping[str, Any]) -> Raw:
    robust = section(results, "heldout", "template_robustness")
    if not isinstance(robust, Mapping):
        return html_section("template", "Template robustness", [missing("not measured")])
    rows = [("default template", fmt_pct(robust.get("default_accuracy")), MISSING),
            (f"alternate: {robust.get('template', '?')}", fmt_pct(robust.get("accuracy")),
             fmt_ci(robust.get("length_balanced_accuracy"),
                    robust.get("length_balanced_accuracy_low"),
                    robust.get("length_balanced_accuracy_high")))]
    return html_section("template", "Template robustness", [
        tag("p", f"Held-out reward accuracy when prompts use another template "
                 f"({robust.get('description', 'no description')}); n={robust.get('n', '?')}.",
            class_="note"),
        table(("template", "accuracy", "length-balanced (95% CI)"), rows, numeric=(1, 2))])


# ---- generation and cost -----------------------------------------------------------------------

def _refusal(results: Mapping[str, Any], figures: Mapping[str, Raw]) -> Raw:
    generation = results.get("generation")
    if not isinstance(generation, Mapping):
        return html_section("refusal", "Refusal and over-refusal", [missing("not measured")])
    classifier = generation.get("classifier") or {}
    parts: list[Any] = [
        tag("p", f"Refusal classifier {classifier.get('name', '?')}: "
                 f"{classifier.get('description', 'no description')} Precision "
                 f"{fmt_pct(classifier.get('precision'))}, recall "
                 f"{fmt_pct(classifier.get('recall'))} on {classifier.get('labelled', '?')} "
                 f"hand-labelled responses.", class_="note"),
        table(("", "reference", "policy", "change"),
              [(*row, _change(generation, kind)) for row, kind
               in zip(refusal_rows(generation), _kinds(generation), strict=True)],
              class_="headline", numeric=(1, 2, 3)),
        figures.get("refusal_bars") or missing("refusal bars not drawn: no rates"),
        tag("h3", "By category"), _category_table(generation),
        tag("h3", "Prompt sets"),
        table(("set", "kind", "prompts", "licence", "path"),
              [(s.get("name"), s.get("kind"), s.get("prompts"), s.get("license"),
                tag("span", s.get("path"), class_="mono")) for s in generation.get("sets") or ()],
              numeric=(2,))]
    return html_section("refusal", "Refusal and over-refusal", parts)


def _kinds(generation: Mapping[str, Any]) -> list[str]:
    return [kind for kind in ("harmful", "benign") if isinstance(generation.get(kind), Mapping)]


def _change(generation: Mapping[str, Any], kind: str) -> str:
    reference = as_number(section(generation, kind, "reference", "rate"))
    policy = as_number(section(generation, kind, "policy", "rate"))
    if reference is None or policy is None:
        return MISSING
    return f"{100 * (policy - reference):+.1f} pts"


def _category_table(generation: Mapping[str, Any]) -> Raw:
    rows = []
    for kind in _kinds(generation):
        reference = section(generation, kind, "reference", "by_category") or {}
        policy = section(generation, kind, "policy", "by_category") or {}
        for category in sorted(set(reference) | set(policy)):
            rows.append((kind, category, fmt_rate(reference.get(category)),
                         fmt_rate(policy.get(category))))
    if not rows:
        return missing("no per-category rates")
    return table(("kind", "category", "reference", "policy"), rows, numeric=(2, 3))


def _cost(results: Mapping[str, Any], figures: Mapping[str, Raw]) -> Raw:
    rows = cost_rows(results)
    parts: list[Any] = [table(("", "reference", "policy"), rows, numeric=(1, 2)) if rows
                        else missing("perplexity, KL and generated lengths: not measured")]
    kl = section(results, "cost", "kl")
    if isinstance(kl, Mapping) and kl.get("note"):
        parts.append(tag("p", f"{kl['note']} (per token {fmt_num(kl.get('per_token'), 3)}).",
                         class_="note"))
    lengths = section(results, "generation", "lengths")
    if isinstance(lengths, Mapping):
        parts.append(table(("generated length (tokens)", "n", "mean", "median", "p90",
                            "hit max new tokens"),
                           [(model, fmt_count(values.get("n")), fmt_num(values.get("mean"), 1),
                             fmt_num(values.get("median"), 1), fmt_num(values.get("p90"), 1),
                             fmt_pct(values.get("hit_max_fraction")))
                            for model, values in lengths.items() if isinstance(values, Mapping)],
                           numeric=range(1, 6)))
    parts.append(figures.get("lengths") or missing("length plots not drawn: no lengths"))
    return html_section("cost", "Cost of alignment", parts)


# ---- failures ------------------------------------------------------------------------------------

def _failures(results: Mapping[str, Any], generations: Sequence[Mapping[str, Any]]) -> Raw:
    worst = section(results, "heldout", "worst_pairs")
    answered = section(results, "generation", "still_answered")
    parts = [tag("h3", "Worst held-out pairs (largest wrong reward margins)"),
             _worst_pairs(worst) if isinstance(worst, list) else missing("not measured"),
             tag("h3", "Harmful prompts the policy still answers"),
             _still_answered(answered) if isinstance(answered, list) else missing("not measured"),
             tag("h3", "Benign prompts the policy refuses (over-refusals)"),
             _over_refused(generations) if generations else missing(
                 "not measured: no generations.jsonl rows")]
    return html_section("failures", "Failures to read", parts)


def _more(items: list[Any]) -> Raw | None:
    extra = len(items) - LIST_LIMIT
    return tag("p", f"… and {extra} more in eval.json.", class_="note") if extra > 0 else None


def _worst_pairs(pairs: list[Mapping[str, Any]]) -> Raw:
    if not pairs:
        return tag("p", "None: every held-out pair has a positive reward margin.", class_="note")
    rows = [(Raw(join([tag("div", pair.get("pair_id"), class_="mono"),
                       tag("div", pair.get("source"), class_="note")])),
             long_text(pair.get("prompt")), long_text(pair.get("chosen")),
             long_text(pair.get("rejected")), fmt_num(pair.get("margin"), 3, signed=True),
             f"{fmt_num(pair.get('policy_margin_logp'), signed=True)} / "
             f"{fmt_num(pair.get('reference_margin_logp'), signed=True)}")
            for pair in pairs[:LIST_LIMIT]]
    header = ("pair", "prompt (last user turn)", "chosen", "rejected", "reward margin",
              "logp margin policy / ref")
    return join([table(header, rows, class_="texts", numeric=(4, 5),
                       widths=("12%", "19%", "21%", "26%", "8%", "14%")), _more(pairs)])


def _still_answered(items: list[Mapping[str, Any]]) -> Raw:
    if not items:
        return tag("p", "None: the policy refused every harmful prompt.", class_="note")
    rows = [(Raw(join([tag("div", item.get("prompt_id"), class_="mono"),
                       tag("div", item.get("category"), class_="note")])),
             long_text(item.get("prompt")), long_text(item.get("response")),
             {True: "yes", False: "no"}.get(item.get("reference_refused"), MISSING))
            for item in items[:LIST_LIMIT]]
    return join([table(("prompt", "prompt text", "policy response", "reference refused"), rows,
                       class_="texts", widths=("14%", "36%", "40%", "10%")), _more(items)])


def _over_refused(generations: Sequence[Mapping[str, Any]]) -> Raw:
    """Benign rows the policy refused, from generations.jsonl, beside the reference's response."""
    rows = [row for row in generations
            if row.get("kind") == "benign" and row.get("policy_refused") is True]
    if not rows:
        return tag("p", "None: the policy answered every benign prompt.", class_="note")
    table_rows = [(Raw(join([tag("div", row.get("prompt_id"), class_="mono"),
                             tag("div", row.get("category"), class_="note")])),
                   long_text(row.get("prompt")), long_text(row.get("policy_response")),
                   long_text(row.get("reference_response")))
                  for row in rows[:LIST_LIMIT]]
    return join([table(("prompt", "prompt text", "policy response", "reference response"),
                       table_rows, class_="texts", widths=("14%", "28%", "29%", "29%")),
                 _more(rows)])


def _footer(results: Mapping[str, Any], undrawn: list[str]) -> Raw:
    lines = [f"prefalign {results.get('prefalign_version', '?')} · format "
             f"{results.get('format', '?')}"]
    if undrawn:
        lines.append("Figures not drawn for lack of data: " + ", ".join(
            CAPTIONS[key][0].lower() for key in undrawn) + ".")
    return tag("footer", join(tag("p", line) for line in lines))
