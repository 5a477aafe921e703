"""The "Replies, before and after" section of report.html: eval.json's `samples` rows as a table
of the conversation, the reference's reply, the policy's reply and the data's chosen reply."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefalign.eval.report_html import Raw, join, long_text, missing, section, table, tag

ANCHOR = "samples"
TITLE = "Replies, before and after"
HEADER = ("conversation", "reference (before)", "policy (after)", "chosen reply in the data")
WIDTHS = ("25%", "25%", "25%", "25%")


def samples_section(results: Mapping[str, Any]) -> Raw:
    """The section; a "not measured" line when eval.json has no samples (no --samples given)."""
    samples = results.get("samples")
    if not isinstance(samples, Mapping) or not samples.get("rows"):
        return section(ANCHOR, TITLE, [missing("not measured: no --samples given")])
    decoding = samples.get("decoding") or {}
    mode = "sampled" if decoding.get("do_sample") else "greedy"
    note = tag("p", f"Both models answer the same {len(samples['rows'])} conversations "
                    f"({mode}, at most {decoding.get('max_new_tokens', '?')} new tokens); the "
                    f"last column is the reply the preference data prefers.", class_="note")
    rows = [(_conversation(row), _reply(row, "reference"), _reply(row, "policy"),
             long_text(row.get("chosen"))) for row in samples["rows"]]
    return section(ANCHOR, TITLE, [note, table(HEADER, rows, class_="texts", widths=WIDTHS)])


def _conversation(row: Mapping[str, Any]) -> Raw:
    parts = [tag("div", row.get("id"), class_="mono")]
    if row.get("system"):
        parts.append(tag("div", f"system: {row['system']}", class_="note"))
    for turn in row.get("history") or ():
        parts.append(tag("div", f"{turn.get('role')}: {turn.get('content')}", class_="note"))
    parts.append(long_text(row.get("prompt")))
    return join(parts)


def _reply(row: Mapping[str, Any], model: str) -> Raw:
    cut = tag("div", "(cut at the token limit)", class_="note") if row.get(
        f"{model}_hit_max") else None
    return join([long_text(row.get(f"{model}_response")), cut])
