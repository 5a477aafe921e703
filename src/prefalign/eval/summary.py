"""summary.md and the terminal lines: the report's headline numbers without the figures.

Both read the same rows as report.html (prefalign.eval.formatting), so the three never disagree.
A section missing from eval.json is named as not measured rather than left out silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefalign.eval.formatting import (
    MISSING,
    UNNAMED,
    Row,
    cost_rows,
    fmt_ci,
    fmt_num,
    fmt_pct,
    fmt_rate,
    headline_rows,
    refusal_rows,
    section,
)


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, newlines flattened."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _markdown_table(header: Sequence[str], rows: Sequence[Row]) -> list[str]:
    lines = ["| " + " | ".join(map(_cell, header)) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return lines + ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]


def _run_lines(results: Mapping[str, Any]) -> list[str]:
    run, models = results.get("run") or {}, results.get("models") or {}
    decoding = section(results, "settings", "decoding")
    if not run:
        return ["- Run: not recorded"]
    lines = [f"- Run: `{run.get('run_dir', MISSING)}` ({run.get('outcome', MISSING)}, "
             f"{run.get('loss', MISSING)} β={run.get('beta', MISSING)})"]
    for role in ("reference", "policy"):
        lines.append(f"- {role.capitalize()}: `{section(models, role, 'source') or MISSING}`")
    if isinstance(decoding, Mapping):
        mode = "sampling" if decoding.get("do_sample") else "greedy"
        lines.append(f"- Decoding: {mode}, temperature {decoding.get('temperature')}, top-p "
                     f"{decoding.get('top_p')}, {decoding.get('max_new_tokens')} new tokens, "
                     f"seed {decoding.get('seed')}")
    return lines


def _template_rows(results: Mapping[str, Any]) -> list[Row]:
    robust = section(results, "heldout", "template_robustness")
    if not isinstance(robust, Mapping):
        return []
    return [(f"Accuracy under the {robust.get('template', '?')} template "
             f"(default: {fmt_pct(robust.get('default_accuracy'))})",
             fmt_pct(robust.get("accuracy")))]


def render_summary(results: Mapping[str, Any]) -> str:
    """summary.md: run, held-out headline, refusal/over-refusal and cost tables, in Markdown."""
    name = section(results, "run", "name") or UNNAMED
    lines = [f"# prefalign eval — {name}", "", *_run_lines(results), "", "## Held-out pairs", ""]
    overall = section(results, "heldout", "overall")
    if isinstance(overall, Mapping):
        lines += _markdown_table(("metric", "value"),
                                 headline_rows(overall) + _template_rows(results))
    else:
        lines.append("Not measured.")
    lines += ["", "## Refusal (harmful prompts) and over-refusal (benign prompts)", ""]
    generation = results.get("generation")
    rows = refusal_rows(generation) if isinstance(generation, Mapping) else []
    lines += _markdown_table(("", "reference", "policy"), rows) if rows else ["Not measured."]
    lines += ["", "## Cost of alignment", ""]
    rows = cost_rows(results)
    lines += _markdown_table(("", "reference", "policy"), rows) if rows else ["Not measured."]
    return "\n".join(lines) + "\n"


def format_headline(results: Mapping[str, Any]) -> str:
    """A few plain lines for the terminal: accuracy with its baselines, log-prob changes,
    refusal and over-refusal reference → policy, KL and perplexity."""
    overall = section(results, "heldout", "overall")
    lines = []
    if isinstance(overall, Mapping):
        get = overall.get
        balanced = fmt_ci(get("length_balanced_accuracy"), get("length_balanced_accuracy_low"),
                          get("length_balanced_accuracy_high"))
        lines.append(f"held-out accuracy {fmt_pct(get('accuracy'))} on {get('n', '?')} pairs "
                     f"(length-only {fmt_pct(get('length_only_accuracy'))}, length-balanced "
                     f"{balanced})")
        lines.append(f"log-prob change vs reference: chosen "
                     f"{fmt_num(get('chosen_logp_change'), signed=True)}, rejected "
                     f"{fmt_num(get('rejected_logp_change'), signed=True)}; both fall in "
                     f"{fmt_pct(get('both_fall'))} of pairs")
    else:
        lines.append("held-out pairs: not measured")
    lines += _generation_lines(results)
    cost = _cost_line(results)
    if cost:
        lines.append(cost)
    return "\n".join(lines)


def _generation_lines(results: Mapping[str, Any]) -> list[str]:
    generation = results.get("generation")
    lines = []
    for kind, label in (("harmful", "refusal on harmful prompts"),
                        ("benign", "over-refusal on benign prompts")):
        rates = section(generation, kind) if isinstance(generation, Mapping) else None
        if isinstance(rates, Mapping):
            lines.append(f"{label}: reference {_short_rate(rates.get('reference'))} → "
                         f"policy {_short_rate(rates.get('policy'))}")
    return lines or ["refusal and over-refusal: not measured"]


def _short_rate(rate: Any) -> str:
    return fmt_rate(rate).split(" (n=")[0] if isinstance(rate, Mapping) else MISSING


def _cost_line(results: Mapping[str, Any]) -> str | None:
    parts = []
    kl = section(results, "cost", "kl")
    if isinstance(kl, Mapping):
        parts.append(f"KL(policy‖reference) {fmt_num(kl.get('mean'))} ± "
                     f"{fmt_num(kl.get('stderr'))} per response")
    chosen = section(results, "cost", "perplexity", "heldout_chosen")
    if isinstance(chosen, Mapping):
        parts.append(f"held-out chosen perplexity {fmt_num(chosen.get('reference'))} → "
                     f"{fmt_num(chosen.get('policy'))}")
    return "; ".join(parts) if parts else None
