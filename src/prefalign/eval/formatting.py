"""Numbers as text, and the labelled rows shared by report.html, summary.md and the terminal.

Every value in eval.json may be missing or null (a CI with n=0, a section not measured), so each
formatter takes `Any` and prints "—" for anything that is not a finite number. The row builders
return (label, value, ...) tuples of plain text; the report escapes them, the summary puts them
in Markdown tables, so all three outputs show the same numbers with the same wording.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MISSING = "—"
UNNAMED = "unnamed run"
Row = tuple[str, ...]


def as_number(value: Any) -> float | None:
    """`value` as a finite float, or None (None, NaN, ±inf, "nan" strings, non-numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt_num(value: Any, digits: int = 2, *, signed: bool = False) -> str:
    """A fixed-point number ("19.70", "+0.82" with `signed`), or "—"."""
    number = as_number(value)
    if number is None:
        return MISSING
    return f"{number:+.{digits}f}" if signed else f"{number:.{digits}f}"


def fmt_count(value: Any) -> str:
    """A count ("200"), or "—"."""
    number = as_number(value)
    return MISSING if number is None else str(round(number))


def fmt_pct(value: Any, digits: int = 1) -> str:
    """A fraction as a percentage ("59.0%"), or "—"."""
    number = as_number(value)
    return MISSING if number is None else f"{100 * number:.{digits}f}%"


def fmt_ci(value: Any, low: Any, high: Any) -> str:
    """A fraction with its 95% interval: "58.0% [52.0–64.0%]"; the interval is left out if unknown."""
    if as_number(low) is None or as_number(high) is None:
        return fmt_pct(value)
    return f"{fmt_pct(value)} [{fmt_pct(low)[:-1]}–{fmt_pct(high)}]"


def fmt_rate(rate: Mapping[str, Any] | None) -> str:
    """A refusal-rate dict {"rate", "low", "high", "n"} as "40.0% [31.0–50.0%] (n=100)"."""
    if not rate:
        return MISSING
    text = fmt_ci(rate.get("rate"), rate.get("low"), rate.get("high"))
    return f"{text} (n={fmt_count(rate['n'])})" if rate.get("n") is not None else text


def section(results: Mapping[str, Any], *path: str) -> Any:
    """results[path[0]][path[1]]..., or None where any step is missing or not a dict."""
    node: Any = results
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def headline_rows(overall: Mapping[str, Any]) -> list[Row]:
    """(label, value) rows for the held-out headline: accuracy always beside its length baselines."""
    get = overall.get
    return [
        ("Held-out pairs", fmt_count(get("n"))),
        ("Implicit-reward accuracy", fmt_pct(get("accuracy"))),
        ("Length-only baseline (the better of: prefer the shorter / the longer reply)",
         fmt_pct(get("length_only_accuracy"))),
        ("Length-balanced accuracy (95% CI)",
         fmt_ci(get("length_balanced_accuracy"), get("length_balanced_accuracy_low"),
                get("length_balanced_accuracy_high"))),
        ("Correlation: reward margin vs length difference", fmt_num(get("reward_length_corr"))),
        ("Mean reward margin (β-scaled)", fmt_num(get("margin"), 3, signed=True)),
        ("Log-prob margin chosen − rejected: policy vs reference",
         f"{fmt_num(get('policy_margin'), signed=True)} vs "
         f"{fmt_num(get('reference_margin'), signed=True)}"),
        ("Chosen log-prob change (policy − reference)",
         fmt_num(get("chosen_logp_change"), signed=True)),
        ("Rejected log-prob change (policy − reference)",
         fmt_num(get("rejected_logp_change"), signed=True)),
        ("Pairs where both log-probs fall", fmt_pct(get("both_fall"))),
    ]


def refusal_rows(generation: Mapping[str, Any]) -> list[Row]:
    """(label, reference, policy) rows: refusal on harmful and over-refusal on benign prompts."""
    rows = []
    for kind, label in (("harmful", "Refusal rate on harmful prompts (higher is safer)"),
                        ("benign", "Over-refusal rate on benign prompts (lower is better)")):
        rates = generation.get(kind)
        if isinstance(rates, Mapping):
            rows.append((label, fmt_rate(rates.get("reference")), fmt_rate(rates.get("policy"))))
    return rows


def cost_rows(results: Mapping[str, Any]) -> list[Row]:
    """(label, reference, policy) rows: perplexities, KL and generated lengths, where measured."""
    rows: list[Row] = []
    perplexity = section(results, "cost", "perplexity") or {}
    for key, label in (("heldout_chosen", "Perplexity of held-out chosen replies"),
                       ("helpful", "Perplexity of helpful replies")):
        if isinstance(perplexity.get(key), Mapping):
            entry = perplexity[key]
            rows.append((f"{label} (n={fmt_count(entry.get('n'))})",
                         fmt_num(entry.get("reference")), fmt_num(entry.get("policy"))))
    helpful = perplexity.get("helpful")
    if isinstance(helpful, Mapping) and helpful.get("policy_margin") is not None:
        rows.append(("Helpful pairs: log-prob margin chosen − rejected",
                     fmt_num(helpful.get("reference_margin"), signed=True),
                     fmt_num(helpful.get("policy_margin"), signed=True)))
        rows.append(("Helpful pairs: implicit-reward accuracy (policy against reference)",
                     MISSING, fmt_pct(helpful.get("accuracy"))))
    kl = section(results, "cost", "kl")
    if isinstance(kl, Mapping):
        rows.append((f"KL(policy ‖ reference) per response (n={fmt_count(kl.get('n'))})", MISSING,
                     f"{fmt_num(kl.get('mean'))} ± {fmt_num(kl.get('stderr'))}"))
    lengths = section(results, "generation", "lengths")
    if isinstance(lengths, Mapping):
        reference, policy = lengths.get("reference") or {}, lengths.get("policy") or {}
        rows.append(("Generated length, mean tokens", fmt_num(reference.get("mean"), 1),
                     fmt_num(policy.get("mean"), 1)))
        rows.append(("Generations that hit max new tokens",
                     fmt_pct(reference.get("hit_max_fraction")),
                     fmt_pct(policy.get("hit_max_fraction"))))
    return rows
