"""`prefalign loop`: iterative on-policy DPO. Each round R samples from the policy round R − 1
made (round 1: the loop's model), judges the samples and builds pairs as `prefalign pairs
build` does, trains DPO on them from that policy, and evaluates the new policy against the
loop's model as `prefalign eval` does.

    LOOPDIR/prompts.jsonl                the prompt files merged, ids kept
    LOOPDIR/round-R/samples.jsonl        + .manifest.json (generator weight hash, settings)
    LOOPDIR/round-R/pairs.jsonl          + .lineage.json (the data version: round R)
    LOOPDIR/round-R/run/                 the DPO run directory (final/ is round R's policy)
    LOOPDIR/round-R/eval/                eval.json, report.html, summary.md, ...
    LOOPDIR/rounds.json, rounds.md       the headline numbers per round
    LOOPDIR/state.json                   the finished stages (loop.rounds_state)

Every stage writes its outputs whole (atomically, or through the resumable writers of
`generate` and `train`), so a loop stopped any way resumes at the stage it stopped in.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prefalign.atomic import replace_dir, write_text_atomic
from prefalign.config import ConfigError
from prefalign.data.bundled import resolve_data_path
from prefalign.engine.forward.onednn import cpu_matmul
from prefalign.engine.sampling.prompts import PromptRow, file_sha256, read_prompt_file
from prefalign.engine.sampling.samples_file import manifest_path
from prefalign.loop.rounds_config import (
    RUN,
    LoopConfig,
    base_train_config,
    original_model,
    round_dir,
    round_train_config,
)
from prefalign.loop.rounds_state import LoopState, open_state
from prefalign.loop.rounds_table import write_table
from prefalign.sources import resolve_model_source

STAGES = ("samples", "pairs", "train", "eval")
PROMPTS = "prompts.jsonl"
StageHook = Callable[[int, str], None]


class RoundFailed(Exception):
    """A round's DPO run ended without a final model (a non-finite loss, say)."""


@dataclass(frozen=True)
class LoopResult:
    """The loop directory and the rows of its rounds.json."""

    loop_dir: Path
    rounds: list[dict[str, Any]]


@dataclass
class _Loop:
    config: LoopConfig
    prompts_path: Path
    prompts: list[PromptRow]
    progress: bool
    tune_process: bool
    panel: Any = None

    def judges(self) -> Any:
        """The panel, loaded at the first pairs stage and kept for the later rounds."""
        if self.panel is None:
            from prefalign.judges.spec import load_panel

            pairs = self.config.pairs
            self.panel = load_panel(pairs.judges, combine=pairs.combine,
                                    safety=pairs.safety_judge, threshold=pairs.threshold)
        return self.panel


def run_loop(config: LoopConfig, *, resume: bool = False, on_stage: StageHook | None = None,
             progress: bool = True, tune_process: bool = False) -> LoopResult:
    """Run (or, with `resume`, continue) every round of `config`; `on_stage(round, stage)` is
    called after each stage is recorded as done."""
    loop_dir = config.loop_dir
    resolve_model_source(original_model(config))  # a bad name fails before anything is written
    state = open_state(loop_dir, loop_identity(config), resume)
    loop_dir.mkdir(parents=True, exist_ok=True)
    loop = _Loop(config, loop_dir / PROMPTS, _merged_prompts(config, state), progress,
                 tune_process)
    for round_ in range(1, config.rounds + 1):
        for stage in STAGES:
            if (stage == "eval" and config.eval is None) or state.done(round_, stage):
                continue
            _say(f"round {round_}/{config.rounds}: {stage}")
            started = time.perf_counter()
            outputs, details = _STAGES[stage](loop, round_)
            details["seconds"] = round(time.perf_counter() - started, 1)  # this try's time
            state.finish(round_, stage, outputs, details)
            write_table(loop_dir, config.rounds)
            if on_stage is not None:
                on_stage(round_, stage)
    return LoopResult(loop_dir, write_table(loop_dir, config.rounds))


def loop_identity(config: LoopConfig) -> dict[str, Any]:
    """What decides the loop's outputs, as fingerprinted in its state: the config (without
    `rounds` and the directory's own name and place), the train config it resolves to, and
    the prompt files' sha256."""
    loop = {key: value for key, value in config.to_dict().items()
            if key not in ("rounds", "name", "output_dir")}
    prompts = [{"source": name, "sha256": file_sha256(_prompt_path(name))}
               for name in config.prompts]
    return {"loop": loop, "train": base_train_config(config).to_dict(),
            "model": original_model(config), "prompts": prompts}


def _prompt_path(name: str) -> Path:
    try:
        path = resolve_data_path(name)
    except KeyError as error:
        raise ConfigError(f"prompts: {error.args[0] if error.args else error}") from None
    if not Path(path).is_file():
        raise ConfigError(f"prompts: {name}: no such prompt file")
    return Path(path)


def _merged_prompts(config: LoopConfig, state: LoopState) -> list[PromptRow]:
    """LOOPDIR/prompts.jsonl: every prompt file's rows with their ids (written once)."""
    path = config.loop_dir / PROMPTS
    if not state.done(0, "prompts"):
        rows: dict[str, dict[str, Any]] = {}
        for name in config.prompts:
            for row in read_prompt_file(_prompt_path(name)):
                if row.id in rows:
                    raise ValueError(f"prompts: {name}: prompt id {row.id!r} is also in an "
                                     f"earlier prompt file; give the rows distinct ids")
                rows[row.id] = {"id": row.id, "prompt": row.prompt, **row.columns}
        write_text_atomic("".join(json.dumps(row, ensure_ascii=False) + "\n"
                                  for row in rows.values()), path)
        state.finish(0, "prompts", [path], {"prompts": len(rows)})
    return read_prompt_file(path)


def _samples(loop: _Loop, round_: int) -> tuple[list[Path], dict[str, Any]]:
    from prefalign.engine.models.resolve import load_model_or_run
    from prefalign.engine.sampling.job import generate_file

    config = loop.config
    out = round_dir(config, round_) / "samples.jsonl"
    start = original_model(config) if round_ == 1 else str(round_dir(config, round_ - 1) / RUN)
    train = round_train_config(config, round_)
    resolved = load_model_or_run(start, train.model.dtype if round_ == 1 else None)
    with cpu_matmul(train.train.cpu_matmul):
        summary = generate_file(resolved, loop.prompts_path, loop.prompts, out,
                                config.sampling.settings(round_), progress=loop.progress)
    return [out, manifest_path(out)], {"generator": resolved.description,
                                       "rows": summary.prompts * config.sampling.n}


def _pairs(loop: _Loop, round_: int) -> tuple[list[Path], dict[str, Any]]:
    from prefalign.loop.pairs import build_pairs

    here = round_dir(loop.config, round_)
    report = build_pairs(here / "samples.jsonl", loop.judges(), here / "pairs.jsonl",
                         prompts_path=loop.prompts_path, options=loop.config.pairs.options(round_))
    for warning in report.warnings:
        _say(f"warning: {warning}")
    _say(f"round {round_}: {report.counts.get('written', 0)} pair(s), "
         f"{report.counts.get('tie', 0)} tie(s)")
    return [report.output, report.lineage], {"fingerprint": report.fingerprint}


def _train(loop: _Loop, round_: int) -> tuple[list[Path], dict[str, Any]]:
    from prefalign.trainers.dpo.train import train

    config = round_train_config(loop.config, round_)
    run_dir = round_dir(loop.config, round_) / RUN
    result = train(config, resume=run_dir.exists(), tune_process=loop.tune_process)
    if result.outcome not in ("completed", "early_stopped"):
        raise RoundFailed(f"round {round_}: the DPO run {run_dir} ended {result.outcome}; fix "
                           f"it and run the loop again with --resume")
    return [run_dir / "final"], {"outcome": result.outcome, "steps": result.steps}


def _eval(loop: _Loop, round_: int) -> tuple[list[Path], dict[str, Any]]:
    from prefalign.eval.runner import run_eval

    options = loop.config.eval
    assert options is not None
    here = round_dir(loop.config, round_)
    staging, out = here / ".eval.partial", here / "eval"
    shutil.rmtree(staging, ignore_errors=True)  # what a stopped evaluation left
    reference = options.reference or original_model(loop.config)
    run_eval(here / RUN, staging, replace(options, reference=reference))
    replace_dir(staging, out)
    return [out / "eval.json"], {"reference": reference}


_STAGES = {"samples": _samples, "pairs": _pairs, "train": _train, "eval": _eval}


def _say(message: str) -> None:
    print(f"prefalign loop: {message}", file=sys.stderr, flush=True)
