"""Audit a preference set before spending compute on it: counts, duplicates, length bias,
truncation impact and prompt leakage into evaluation files.

All numbers come back in one `AuditReport` (`to_dict()` for JSON, `format_audit()` for a
terminal table). A flag is raised when a check finds something a user should act on.
`AuditCollector` gathers the numbers from pairs as they stream by (see `stream_pairs`), keeping
only lengths and prompt hashes; `audit()` runs it over pairs already loaded.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from prefalign.data.audit_stats import (
    Leakage,
    LengthBias,
    TruncationImpact,
    key_hash,
    leakage,
    leakage_against,
    length_bias,
    prompt_key,
    repeated_prompts,
    truncation_impact,
)
from prefalign.data.load import LoadResult
from prefalign.data.scan import ScanSummary
from prefalign.data.types import PreferencePair

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["AuditCollector", "AuditReport", "LengthBias", "Leakage", "TruncationImpact", "audit",
           "format_audit", "leakage", "length_bias", "prompt_key", "truncation_impact"]

# A rule that only looks at length ("prefer the longer" or "prefer the shorter") scoring this
# well is a shortcut a model can learn instead of the preference (seed 004: the verbosity trap).
LENGTH_ONLY_ACCURACY_FLAG = 0.55
# Pairs per call of the tokenizer: large enough for its batch encoding to pay off, small
# enough that the rendered texts and encodings of one batch stay a few megabytes.
TOKENIZE_BATCH = 1024


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


class AuditCollector:
    """The audit's numbers, gathered one pair at a time.

    Per pair it keeps three lengths and a prompt hash. With a tokenizer the lengths are token
    counts (through the chat template, in batches of TOKENIZE_BATCH pairs); pairs added with
    their own `lengths` count in tokens too; otherwise lengths are characters.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase | None = None, *,
                 batch_pairs: int = TOKENIZE_BATCH, token_lengths: bool | None = None) -> None:
        self.tokenizer = tokenizer
        self.batch_pairs = batch_pairs
        self.in_tokens = tokenizer is not None if token_lengths is None else token_lengths
        self.pairs = 0
        self.by_source: Counter[str] = Counter()
        self.prompt_hashes = array("Q")
        self.lengths = (array("i"), array("i"), array("i"))  # prompt, chosen, rejected
        self._pending: list[PreferencePair] = []

    def add(self, pair: PreferencePair, lengths: tuple[int, int, int] | None = None) -> None:
        self.pairs += 1
        self.by_source[pair.provenance.source] += 1
        self.prompt_hashes.append(key_hash(prompt_key(pair)))
        if lengths is not None:
            self._append_lengths([lengths])
        elif self.tokenizer is not None:
            self._pending.append(pair)
            if len(self._pending) >= self.batch_pairs:
                self._tokenize_pending()
        else:
            self._append_lengths([(0, len(pair.chosen), len(pair.rejected))])

    def _append_lengths(self, rows: Iterable[tuple[int, int, int]]) -> None:
        for row in rows:
            for column, value in zip(self.lengths, row, strict=True):
                column.append(value)

    def _tokenize_pending(self) -> None:
        from prefalign.data.tokenize import token_lengths

        if self._pending:
            self._append_lengths(token_lengths(self._pending, self.tokenizer))
            self._pending = []

    def report(self, summary: ScanSummary, fingerprint: str, *, max_length: int | None = None,
               max_prompt_length: int | None = None,
               eval_pairs: Iterable[PreferencePair] | None = None) -> AuditReport:
        """The report; `eval_pairs` (read now, after the training pairs) for the leakage check."""
        self._tokenize_pending()
        prompt, chosen, rejected = (np.frombuffer(c, dtype=np.int32) for c in self.lengths)
        bias = None
        if self.pairs:
            bias = length_bias(chosen, rejected, "tokens" if self.in_tokens else "characters")
        trunc = None
        if self.in_tokens and max_length is not None:
            table = np.stack([prompt, chosen, rejected], axis=1)
            trunc = truncation_impact(table, max_length, max_prompt_length or max_length // 2)
        hashes = np.frombuffer(self.prompt_hashes, dtype=np.uint64)
        report = AuditReport(
            pairs=self.pairs, records_read=summary.records_read,
            records_rejected=summary.records_rejected, defects=len(summary.defects),
            empty_response_defects=sum("empty" in d.message for d in summary.defects),
            pairs_by_source=dict(self.by_source), format_by_source=dict(summary.format_by_source),
            duplicate_records_dropped=summary.duplicates_dropped,
            identical_pairs_dropped=summary.identical_dropped,
            repeated_prompts=repeated_prompts(hashes), length_bias=bias, truncation=trunc,
            leakage=leakage_against(hashes, eval_pairs) if eval_pairs is not None else None,
            fingerprint=fingerprint,
        )
        return replace(report, flags=_flags(report))


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
    collector = AuditCollector(token_lengths=lengths is not None)
    per_pair = lengths if lengths is not None else [None] * len(loaded.pairs)
    for pair, counts in zip(loaded.pairs, per_pair, strict=True):
        collector.add(pair, counts)
    summary = ScanSummary(
        defects=loaded.defects, format_by_source=loaded.format_by_source,
        records_read=loaded.records_read, records_rejected=loaded.records_rejected,
        pairs_kept=len(loaded.pairs), identical_dropped=len(loaded.dropped_identical),
        duplicates_dropped=len(loaded.dropped_duplicates), warnings=loaded.warnings,
    )
    return collector.report(summary, fingerprint, max_length=max_length,
                            max_prompt_length=max_prompt_length, eval_pairs=eval_pairs)


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
