"""Audit a preference set before spending compute on it: counts, duplicates, length bias,
truncation impact and prompt leakage into evaluation files.

All numbers come back in one `AuditReport` (`to_dict()` for JSON, `format_audit()` for a
terminal table). A flag is raised when a check finds something a user should act on.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

from prefalign.data.load import LoadResult
from prefalign.data.types import PreferencePair

# A rule that only looks at length ("prefer the longer" or "prefer the shorter") scoring this
# well is a shortcut a model can learn instead of the preference (seed 004: the verbosity trap).
LENGTH_ONLY_ACCURACY_FLAG = 0.55


@dataclass(frozen=True)
class LengthBias:
    unit: str  # "tokens" or "characters"
    pairs: int
    frac_chosen_longer: float
    frac_chosen_shorter: float
    frac_equal: float
    mean_difference: float  # chosen - rejected
    median_difference: float
    cohens_d: float  # (mean_c - mean_r) / pooled sd, sd with ddof=1
    length_only_accuracy: float  # best of "prefer longer" / "prefer shorter", ties count half
    length_only_rule: str


@dataclass(frozen=True)
class TruncationImpact:
    max_length: int
    max_prompt_length: int
    over_length: int  # pairs that need any truncation; dropped under on_overflow=drop
    prompt_truncated: int
    response_truncated: int  # pairs that lose response tokens under on_overflow=truncate


@dataclass(frozen=True)
class Leakage:
    eval_prompts: int
    leaked_pairs: int  # training pairs whose prompt is also an eval prompt
    leaked_prompts: int  # distinct such prompts
    examples: tuple[str, ...]


@dataclass(frozen=True)
class AuditReport:
    pairs: int
    records_read: int
    records_rejected: int
    defects: int
    empty_response_defects: int
    pairs_by_source: dict[str, int]
    format_by_source: dict[str, str]
    duplicate_records_dropped: int
    identical_pairs_dropped: int
    repeated_prompts: int  # prompts that appear in more than one kept pair
    length_bias: LengthBias | None
    truncation: TruncationImpact | None
    leakage: Leakage | None
    fingerprint: str
    flags: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def length_bias(chosen_lengths: Sequence[int], rejected_lengths: Sequence[int], unit: str) -> LengthBias:
    """Length statistics of chosen against rejected responses (equal-length sequences, n >= 1)."""
    n = len(chosen_lengths)
    diffs = [c - r for c, r in zip(chosen_lengths, rejected_lengths, strict=True)]
    longer = sum(d > 0 for d in diffs) / n
    shorter = sum(d < 0 for d in diffs) / n
    equal = 1.0 - longer - shorter
    rule, best = ("prefer longer", longer) if longer >= shorter else ("prefer shorter", shorter)
    return LengthBias(
        unit=unit, pairs=n, frac_chosen_longer=longer, frac_chosen_shorter=shorter,
        frac_equal=equal, mean_difference=statistics.fmean(diffs),
        median_difference=float(statistics.median(diffs)),
        cohens_d=_cohens_d(chosen_lengths, rejected_lengths),
        length_only_accuracy=best + equal / 2, length_only_rule=rule,
    )


def _cohens_d(a: Sequence[int], b: Sequence[int]) -> float:
    if len(a) < 2:
        return 0.0
    pooled = ((statistics.variance(a) + statistics.variance(b)) / 2) ** 0.5
    return 0.0 if pooled == 0 else (statistics.fmean(a) - statistics.fmean(b)) / pooled


def truncation_impact(
    lengths: Sequence[tuple[int, int, int]], max_length: int, max_prompt_length: int
) -> TruncationImpact:
    """Counts under the truncation policy: keep the end of the prompt (down to
    max_prompt_length), then cut responses to fit max_length. lengths: (prompt, chosen, rejected)."""
    over = prompt_cut = response_cut = 0
    for prompt, chosen, rejected in lengths:
        if prompt + max(chosen, rejected) <= max_length:
            continue
        over += 1
        kept_prompt = min(prompt, max_prompt_length)
        prompt_cut += kept_prompt < prompt
        response_cut += kept_prompt + max(chosen, rejected) > max_length
    return TruncationImpact(max_length, max_prompt_length, over, prompt_cut, response_cut)


def prompt_key(pair: PreferencePair) -> str:
    """Whitespace- and case-normalised text of the prompt's non-system messages."""
    turns = (f"{m.role}: {' '.join(m.content.split()).lower()}" for m in pair.prompt if m.role != "system")
    return "\n".join(turns)


def leakage(train: Sequence[PreferencePair], evaluation: Sequence[PreferencePair]) -> Leakage:
    eval_keys = {prompt_key(p) for p in evaluation}
    leaked = [p for p in train if prompt_key(p) in eval_keys]
    distinct = sorted({prompt_key(p) for p in leaked})
    return Leakage(len(eval_keys), len(leaked), len(distinct), tuple(k[:120] for k in distinct[:5]))


def _flags(report: AuditReport) -> tuple[str, ...]:
    flags = []
    if report.defects:
        flags.append(f"{report.defects} defect(s) in the input")
    if report.duplicate_records_dropped or report.identical_pairs_dropped:
        flags.append(f"{report.duplicate_records_dropped} duplicate record(s) and "
                     f"{report.identical_pairs_dropped} chosen==rejected pair(s) dropped")
    bias = report.length_bias
    if bias and bias.length_only_accuracy >= LENGTH_ONLY_ACCURACY_FLAG:
        flags.append(f"length bias: '{bias.length_only_rule}' alone scores "
                     f"{bias.length_only_accuracy:.1%} (>= {LENGTH_ONLY_ACCURACY_FLAG:.0%})")
    if report.truncation and report.truncation.response_truncated:
        flags.append(f"{report.truncation.response_truncated} pair(s) lose response tokens at "
                     f"max_length={report.truncation.max_length}")
    if report.leakage and report.leakage.leaked_pairs:
        flags.append(f"leakage: {report.leakage.leaked_pairs} training pair(s) share a prompt with the eval set")
    return tuple(flags)


def audit(
    loaded: LoadResult,
    fingerprint: str,
    *,
    lengths: Sequence[tuple[int, int, int]] | None = None,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    eval_pairs: Sequence[PreferencePair] | None = None,
) -> AuditReport:
    """Audit loaded pairs. `lengths` are per-pair (prompt, chosen, rejected) token counts from
    `prefalign.data.tokenize.token_lengths`; without them lengths are in characters and the
    truncation check is skipped."""
    pairs = loaded.pairs
    bias = None
    if pairs and lengths is not None:
        bias = length_bias([c for _, c, _ in lengths], [r for _, _, r in lengths], "tokens")
    elif pairs:
        bias = length_bias([len(p.chosen) for p in pairs], [len(p.rejected) for p in pairs], "characters")
    trunc = None
    if lengths is not None and max_length is not None:
        trunc = truncation_impact(lengths, max_length, max_prompt_length or max_length // 2)
    prompt_counts = Counter(prompt_key(p) for p in pairs)
    report = AuditReport(
        pairs=len(pairs), records_read=loaded.records_read, records_rejected=loaded.records_rejected,
        defects=len(loaded.defects),
        empty_response_defects=sum("empty" in d.message for d in loaded.defects),
        pairs_by_source=dict(Counter(p.provenance.source for p in pairs)),
        format_by_source=dict(loaded.format_by_source),
        duplicate_records_dropped=len(loaded.dropped_duplicates),
        identical_pairs_dropped=len(loaded.dropped_identical),
        repeated_prompts=sum(1 for c in prompt_counts.values() if c > 1),
        length_bias=bias, truncation=trunc,
        leakage=leakage(pairs, eval_pairs) if eval_pairs is not None else None,
        fingerprint=fingerprint,
    )
    return replace(report, flags=_flags(report))


def format_audit(report: AuditReport) -> str:
    """A readable terminal table of the report's numbers."""
    rows: list[tuple[str, str]] = [
        ("pairs kept", str(report.pairs)),
        ("records read / rejected", f"{report.records_read} / {report.records_rejected}"),
        ("defects (empty responses)", f"{report.defects} ({report.empty_response_defects})"),
        ("duplicate records dropped", str(report.duplicate_records_dropped)),
        ("chosen == rejected dropped", str(report.identical_pairs_dropped)),
        ("prompts shared by several pairs", str(report.repeated_prompts)),
    ]
    rows += [(f"source {src} [{report.format_by_source.get(src, '?')}]", str(n))
             for src, n in sorted(report.pairs_by_source.items())]
    if (b := report.length_bias) is not None:
        rows += [
            (f"chosen longer / shorter / equal ({b.unit})",
             f"{b.frac_chosen_longer:.1%} / {b.frac_chosen_shorter:.1%} / {b.frac_equal:.1%}"),
            ("length diff chosen-rejected mean / median", f"{b.mean_difference:+.1f} / {b.median_difference:+.1f}"),
            ("Cohen's d (chosen vs rejected length)", f"{b.cohens_d:+.3f}"),
            (f"length-only accuracy ({b.length_only_rule})", f"{b.length_only_accuracy:.1%}"),
        ]
    if (t := report.truncation) is not None:
        rows += [
            (f"over max_length={t.max_length} (dropped if on_overflow=drop)", str(t.over_length)),
            (f"prompt cut to {t.max_prompt_length} tokens", str(t.prompt_truncated)),
            ("lose response tokens", str(t.response_truncated)),
        ]
    if (leak := report.leakage) is not None:
        rows += [("eval prompts / leaked pairs / leaked prompts",
                  f"{leak.eval_prompts} / {leak.leaked_pairs} / {leak.leaked_prompts}")]
    rows.append(("fingerprint", report.fingerprint))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines += [f"FLAG: {f}" for f in report.flags] or ["no flags raised"]
    return "\n".join(lines)
