"""`prefalign distill-context`: safety context distillation (Llama 2, Touvron et al. 2023).

The model answers every prompt twice, as it is and with a safety pre-prompt; the judges score
both answers as replies to the prompt without the pre-prompt; a pre-prompted answer is kept
where it beats the plain one by more than the margin (Llama 2 keeps a context-distilled answer
only where the reward model prefers it to the original). Kept answers are written as SFT rows
whose prompt has no pre-prompt, so fine-tuning on them teaches the model to answer that way
unprompted; with `pairs_output`, also as DPO pairs: pre-prompted answer chosen, plain rejected.

Where the pre-prompt goes and which answers are kept: `loop.context`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefalign.eval.generate import DecodeSettings, generate
from prefalign.judges.base import Completions
from prefalign.judges.combine import Panel, Verdicts
from prefalign.loop.context import DEFAULT_PREPROMPT, Position, outcome, with_preprompt
from prefalign.loop.generator import Generator, load_generator
from prefalign.loop.lineage import file_parent, file_sha256, lineage_record
from prefalign.loop.prompts import PromptRow, read_prompt_file
from prefalign.loop.records import fingerprint, labels, pair_row, sft_row, write_outputs


@dataclass(frozen=True)
class DistillOptions:
    """preprompt and where it goes (`loop.context`); min_margin: how much the pre-prompted
    answer's score must beat the plain one's; round: the loop iteration; decoding: both
    generations' settings."""

    preprompt: str = DEFAULT_PREPROMPT
    position: Position = "prefix"
    min_margin: float = 0.0
    round: int = 1
    decoding: DecodeSettings = field(default_factory=DecodeSettings)

    def __post_init__(self) -> None:
        if not self.preprompt.strip():
            raise ValueError("--preprompt must not be empty")
        if self.position not in ("prefix", "system"):
            raise ValueError(f"--preprompt-position must be prefix or system, got "
                             f"{self.position!r}")
        if self.min_margin < 0:
            raise ValueError(f"--min-margin must be >= 0, got {self.min_margin}")


@dataclass(frozen=True)
class Answer:
    """One generated answer: its text (leading whitespace removed, as in `loop.samples`), its
    token count, and whether it hit max_new_tokens."""

    text: str
    tokens: int
    hit_max: bool


@dataclass(frozen=True)
class DistillReport:
    """The files written (pairs_output None when no pairs were asked for or none were made),
    their fingerprints ("sft", "pairs") and the counts."""

    output: Path
    pairs_output: Path | None
    fingerprints: dict[str, str]
    counts: dict[str, int]


def distill_context(model_or_run: str, prompts_path: str | Path, panel: Panel,
                    output: str | Path, *, pairs_output: str | Path | None = None,
                    options: DistillOptions = DistillOptions()) -> DistillReport:
    """Generate both ways, judge, filter and write (module docstring)."""
    rows = read_prompt_file(prompts_path)  # a bad prompt file fails before the model loads
    generator = load_generator(model_or_run)
    plain, preprompted = generate_both(generator, rows, options)
    return write_distilled(rows, plain, preprompted, panel, output, pairs_output, options,
                           generator.describe(), prompts_path)


def generate_both(generator: Generator, rows: list[PromptRow],
                  options: DistillOptions) -> tuple[list[Answer], list[Answer]]:
    """Each prompt answered as it is, then with the pre-prompt, under the same settings."""
    plain = [row.prompt for row in rows]
    primed = [with_preprompt(row.prompt, options.preprompt, options.position) for row in rows]
    answers = []
    for prompts, desc in ((plain, "generate (plain)"), (primed, "generate (pre-prompted)")):
        generations = generate(generator.model, generator.tokenizer, prompts, options.decoding,
                               desc=desc)
        answers.append([Answer(g.text.lstrip(), g.num_tokens, g.hit_max) for g in generations])
    return answers[0], answers[1]


def write_distilled(rows: list[PromptRow], plain: list[Answer], preprompted: list[Answer],
                    panel: Panel, output: str | Path, pairs_output: str | Path | None,
                    options: DistillOptions, generator: dict[str, Any],
                    prompts_path: str | Path) -> DistillReport:
    """Judge both answers of every prompt, keep the preferred pre-prompted ones, write them."""
    verdicts = judge_both(rows, plain, preprompted, panel)
    counts: Counter[str] = Counter(prompts=len(rows))
    provenance = {"round": options.round, "generator": generator, "judges": panel.describe(),
                  "preprompt": options.preprompt, "position": options.position,
                  "decoding": options.decoding.to_dict(),
                  "prompt_set": {"path": str(prompts_path), "sha256": file_sha256(prompts_path)}}
    sft, pairs = _kept_rows(rows, plain, preprompted, verdicts, options, provenance, counts)
    if not sft:
        raise ValueError(f"{prompts_path}: no pre-prompted answer was preferred "
                         f"({_account(counts)}); nothing written")
    counts["pairs"] = len(pairs) if pairs_output is not None else 0
    parents = [file_parent(prompts_path, "prompts")]
    settings = {"preprompt": options.preprompt, "position": options.position,
                "min_margin": options.min_margin, "round": options.round,
                "decoding": options.decoding.to_dict(), "generator": generator}
    write = {"parents": parents, "panel": panel, "settings": settings, "counts": counts,
             "round_": options.round}
    fingerprints = {"sft": _write(output, sft, "sft_conversations", **write)}
    if pairs_output is not None and pairs:
        fingerprints["pairs"] = _write(pairs_output, pairs, "preference_pairs", **write)
    return DistillReport(Path(output), Path(pairs_output) if pairs_output and pairs else None,
                         fingerprints, dict(counts))


def _kept_rows(rows: list[PromptRow], plain: list[Answer], preprompted: list[Answer],
               verdicts: Verdicts, options: DistillOptions, provenance: dict[str, Any],
               counts: Counter[str]) -> tuple[list, list]:
    """SFT rows of the kept answers and their pairs; rows repeating an earlier row's content
    are left out, as the loaders would leave them out."""
    n = len(rows)
    sft, pairs, seen = [], [], set()
    for i, row in enumerate(rows):
        scores = (verdicts.combined[n + i], verdicts.combined[i])
        result = outcome(*scores, preprompted[i].text, options.min_margin)
        counts[result] += 1
        if result != "kept":
            continue
        counts["cut_off"] += preprompted[i].hit_max
        metadata = {**provenance, "prompt_id": row.prompt_id, "columns": dict(row.columns),
                    "preprompted": _side(verdicts, n + i, preprompted[i]),
                    "plain": _side(verdicts, i, plain[i])}
        top = labels(row.columns, prompt_id=row.prompt_id, round=options.round,
                     preprompted_score=scores[0], plain_score=scores[1])
        built = sft_row(row.prompt_id, row.prompt, preprompted[i].text, top, metadata)
        if built[1].content_key() in seen:
            counts["duplicates"] += 1
            continue
        seen.add(built[1].content_key())
        sft.append(built)
        if plain[i].text.strip() and plain[i].text != preprompted[i].text:
            pairs.append(pair_row(row.prompt_id, row.prompt, preprompted[i].text, plain[i].text,
                                  top, metadata))
    return sft, pairs


def judge_both(rows: list[PromptRow], plain: list[Answer], preprompted: list[Answer],
               panel: Panel) -> Verdicts:
    """Scores of the plain answers (0..n-1), then the pre-prompted ones (n..2n-1), each judged
    as a reply to the prompt without the pre-prompt."""
    prompts = [row.prompt for row in rows] * 2
    columns = [{**row.columns, "prompt_id": row.prompt_id} for row in rows] * 2
    texts = [answer.text for answer in (*plain, *preprompted)]
    return panel.score(Completions(prompts, texts, columns))


def _side(verdicts: Verdicts, index: int, answer: Answer) -> dict[str, Any]:
    return {"score": verdicts.combined[index],
            "scores": {judge: values[index] for judge, values in verdicts.by_judge.items()},
            "tokens": answer.tokens, "hit_max": answer.hit_max}


def _write(output: str | Path, built: list, kind: str, *, parents: list[dict], panel: Panel,
           settings: dict[str, Any], counts: Counter[str], round_: int) -> str:
    rows, items = [row for row, _ in built], [item for _, item in built]
    print_fp = fingerprint(items)
    write_outputs(output, rows, lineage_record(
        kind=kind, fingerprint=print_fp, parents=parents, judges=panel.describe(),
        settings=settings, counts=dict(counts), round_=round_, output=output))
    return print_fp


def _account(counts: Counter[str]) -> str:
    return ", ".join(f"{name} {value}" for name, value in counts.items() if value)


def format_report(report: DistillReport) -> str:
    """The counts kept and dropped, what was written and its fingerprints."""
    c = Counter(report.counts)
    lines = [
        f"{c['prompts']} prompt(s): kept {c['kept']} pre-prompted answer(s) "
        f"({c['cut_off']} of them cut off at --max-new-tokens); dropped {c['not_better']} not "
        f"preferred to the plain answer, {c['unsafe']} below the safety threshold, "
        f"{c['empty']} empty" + (f", {c['duplicates']} repeated" if c["duplicates"] else ""),
        f"wrote {c['kept'] - c['duplicates']} SFT row(s) to {report.output} "
        f"(fingerprint {report.fingerprints['sft']})",
    ]
    if report.pairs_output is not None:
        lines.append(f"wrote {c['pairs']} pair(s) to {report.pairs_output} "
                     f"(fingerprint {report.fingerprints['pairs']})")
    return "\n".join(lines)
