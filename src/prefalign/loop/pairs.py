"""`prefalign pairs build`: scored samples become preference pairs (or, with `best`, SFT rows for
rejection-sampling fine-tuning), with their provenance and a lineage record.

Steps: read the samples (and the prompt file), leave out empty completions, score every
completion with the panel of judges, choose per prompt (`loop.select`), drop rows that repeat
an earlier row's content (as the loaders would), then write the rows and the lineage record.
Nothing is written until every judge has scored every completion.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefalign.judges.base import Completions
from prefalign.judges.combine import Panel, Verdicts
from prefalign.loop.lineage import file_parent, file_sha256, generator_provenance, lineage_record
from prefalign.loop.prompts import read_prompt_file
from prefalign.loop.records import fingerprint, labels, pair_row, sft_row, write_outputs
from prefalign.loop.samples import Sample, SampleSet, read_samples
from prefalign.loop.select import Choice, Strategy, choose


@dataclass(frozen=True)
class BuildOptions:
    """strategy: best-worst | best-random | best (loop.select). min_margin: a pair's chosen
    score must beat its rejected one by more than this (pairs only). seed: best-random's picks.
    round: the iteration of generate → judge → train this output belongs to."""

    strategy: Strategy = "best-worst"
    min_margin: float = 0.0
    seed: int = 0
    round: int = 1

    def __post_init__(self) -> None:
        if self.min_margin < 0:
            raise ValueError(f"--min-margin must be >= 0, got {self.min_margin}")
        if self.round < 0:
            raise ValueError(f"--round must be >= 0, got {self.round}")


@dataclass(frozen=True)
class BuildReport:
    """What was written, and an account of every prompt and sample that was not used."""

    output: Path
    lineage: Path
    fingerprint: str
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    scores: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Scored:
    samples: SampleSet
    usable: dict[str, list[Sample]]  # by prompt, empty completions left out
    verdicts: Verdicts
    position: dict[tuple[str, int], int]  # (prompt id, sample index) -> completion index


def build_pairs(samples_path: str | Path, panel: Panel, output: str | Path, *,
                prompts_path: str | Path | None = None,
                options: BuildOptions = BuildOptions()) -> BuildReport:
    """Read, judge, choose and write (module docstring); returns what was written."""
    prompts = read_prompt_file(prompts_path) if prompts_path is not None else None
    scored = _score(read_samples(samples_path, prompts), panel)
    counts: Counter[str] = Counter(prompts=len(scored.samples.by_prompt),
                                   samples=len(scored.samples.samples))
    counts["empty"] = counts["samples"] - sum(len(g) for g in scored.usable.values())
    counts["unsafe_dropped"] = sum(score is None for score in scored.verdicts.combined)
    provenance = _provenance(scored, panel, prompts_path, options)
    rows, items = _rows(scored, options, provenance, counts)
    if not rows:
        raise ValueError(f"{samples_path}: no {_what(options)} to write ({_account(counts)}); "
                         "nothing written")
    parents = [file_parent(samples_path, "samples", scored.samples.manifest)]
    if prompts_path is not None:
        parents.append(file_parent(prompts_path, "prompts"))
    kind = "sft_conversations" if options.strategy == "best" else "preference_pairs"
    output_fingerprint = fingerprint(items)
    scores = score_means(scored.verdicts)
    record = lineage_record(kind=kind, fingerprint=output_fingerprint, parents=parents,
                            judges=panel.describe(), settings=asdict(options),
                            counts=dict(counts), round_=options.round, output=output,
                            scores=scores)
    lineage = write_outputs(output, rows, record)
    return BuildReport(Path(output), lineage, output_fingerprint, dict(counts),
                       _prompt_file_warnings(parents), scores)


def score_means(verdicts: Verdicts) -> dict[str, Any]:
    """The mean score over every judged completion: combined (those the piecewise rule kept)
    and per judge; None where nothing was scored."""
    kept = [score for score in verdicts.combined if score is not None]
    return {"combined_mean": sum(kept) / len(kept) if kept else None,
            "by_judge_mean": {judge: sum(values) / len(values) if values else None
                              for judge, values in verdicts.by_judge.items()},
            "scored": len(verdicts.combined)}


def _score(samples: SampleSet, panel: Panel) -> _Scored:
    usable = {pid: [s for s in group if s.text.strip()] for pid, group in samples.by_prompt.items()}
    flat = [sample for group in usable.values() for sample in group]
    completions = Completions([s.prompt for s in flat], [s.text for s in flat],
                              [s.columns for s in flat])
    verdicts = panel.score(completions) if flat else Verdicts({}, [])
    position = {(s.prompt_id, s.index): i for i, s in enumerate(flat)}
    return _Scored(samples, usable, verdicts, position)


def _provenance(scored: _Scored, panel: Panel, prompts_path: str | Path | None,
                options: BuildOptions) -> dict[str, Any]:
    """What every row carries about how it was made."""
    generator = generator_provenance(scored.samples.manifest)
    prompts_fingerprint = generator.get("prompts_fingerprint")
    if prompts_fingerprint is None and prompts_path is not None:
        prompts_fingerprint = file_sha256(prompts_path)
    return {
        "round": options.round,
        "strategy": options.strategy,
        "generator": generator,
        "judges": panel.describe(),
        "prompt_set": {"fingerprint": prompts_fingerprint,
                       "path": str(prompts_path) if prompts_path is not None else None},
        "samples": str(scored.samples.path),
    }


def _rows(scored: _Scored, options: BuildOptions, provenance: dict[str, Any],
          counts: Counter[str]) -> tuple[list[dict], list]:
    rows, items, seen = [], [], set()
    for prompt_id, group in scored.usable.items():
        scores = [scored.verdicts.combined[scored.position[(prompt_id, s.index)]] for s in group]
        choice = choose(scores, options.strategy, min_margin=options.min_margin,
                        seed=options.seed, prompt_id=prompt_id)
        if not isinstance(choice, Choice):
            counts[choice] += 1
            continue
        if choice.rejected is not None and group[choice.chosen].text == group[choice.rejected].text:
            counts["identical"] += 1  # one text sampled twice, scored apart by float rounding
            continue
        row, item = _row(scored, group, choice, provenance)
        if item.content_key() in seen:
            counts["duplicates"] += 1
            continue
        seen.add(item.content_key())
        rows.append(row)
        items.append(item)
    counts["written"] = len(rows)
    return rows, items


def _row(scored: _Scored, group: list[Sample], choice: Choice, provenance: dict[str, Any]):
    chosen = group[choice.chosen]
    metadata = {**provenance, "prompt_id": chosen.prompt_id, "columns": dict(chosen.columns),
                "chosen": _side(scored, chosen)}
    top = {"prompt_id": chosen.prompt_id, "round": provenance["round"],
           "chosen_score": metadata["chosen"]["score"]}
    if choice.rejected is None:
        return sft_row(chosen.prompt_id, chosen.prompt, chosen.text,
                       labels(chosen.columns, **top), metadata)
    rejected = group[choice.rejected]
    metadata["rejected"] = _side(scored, rejected)
    top["rejected_score"] = metadata["rejected"]["score"]
    return pair_row(chosen.prompt_id, chosen.prompt, chosen.text, rejected.text,
                    labels(chosen.columns, **top), metadata)


def _side(scored: _Scored, sample: Sample) -> dict[str, Any]:
    """One chosen or rejected sample: its index, combined and per-judge scores, how it ended."""
    i = scored.position[(sample.prompt_id, sample.index)]
    return {"sample": sample.index, "score": scored.verdicts.combined[i],
            "scores": {judge: values[i] for judge, values in scored.verdicts.by_judge.items()},
            "tokens": sample.tokens, "finish_reason": sample.finish_reason}


def _prompt_file_warnings(parents: list[dict]) -> list[str]:
    """A warning when the prompt file is not the one the samples' manifest says they came from."""
    recorded = parents[0]["generator"]["prompts_fingerprint"]
    given = [parent for parent in parents if parent["role"] == "prompts"]
    if not given or not isinstance(recorded, str) or recorded == given[0]["sha256"]:
        return []
    return [f"{given[0]['path']}: its sha256 differs from the prompts fingerprint the samples' "
            f"manifest records ({recorded}); the samples may come from other prompts"]


def _what(options: BuildOptions) -> str:
    return "SFT rows" if options.strategy == "best" else "pairs"


def _account(counts: Counter[str]) -> str:
    return ", ".join(f"{name} {value}" for name, value in counts.items() if value)


def format_report(report: BuildReport, strategy: Strategy) -> str:
    """The counts, what was written and its fingerprint, for the terminal."""
    c = Counter(report.counts)
    skipped = ", ".join(f"{c[name]} {label}" for name, label in (
        ("tie", "tied within the margin"), ("too_few", "with too few usable samples"),
        ("identical", "whose best and worst texts were the same"),
        ("duplicates", "repeating an earlier row")) if c.get(name))
    lines = [
        f"{c['samples']} sample(s) of {c['prompts']} prompt(s); {c['empty']} empty and "
        f"{c['unsafe_dropped']} below the safety threshold left out",
        f"wrote {c['written']} {'SFT row(s)' if strategy == 'best' else 'pair(s)'} to "
        f"{report.output}" + (f"; prompts without one: {skipped}" if skipped else ""),
        f"lineage: {report.lineage}",
        f"fingerprint: {report.fingerprint}",
    ]
    return "\n".join(lines)
