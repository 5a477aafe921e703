"""The shared training loop: `train(config, method)`, every step named; the method (method.py)
says what a batch is and what its loss is.

Per optimiser step: forward/backward over the micro-batches (step.py), update or skip, log,
evaluate every `eval_every` steps (heldout.py), run the health checks (health.py), stop early
when the held-out metric stops improving (stopping.py), checkpoint every `save_every` steps.
At the end: a last evaluation, a checkpoint, `final/` and the manifest's outcome. The run
works unchanged under `accelerate launch` and `torchrun`: see data.py for how the global batch
is split over processes and step.py for how losses and metrics are reduced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefalign.config import Config
from prefalign.engine import heap
from prefalign.engine.forward.onednn import cpu_matmul
from prefalign.engine.manifest import finish_manifest, record_failure, update_manifest
from prefalign.engine.models.final import save_final
from prefalign.engine.process import cap_kernel_caches
from prefalign.trainers.loop.checkpoint import save_checkpoint
from prefalign.trainers.loop.health import WINDOW, HealthMonitor
from prefalign.trainers.loop.heldout import evaluate
from prefalign.trainers.loop.method import Method
from prefalign.trainers.loop.progress import Progress, format_summary
from prefalign.trainers.loop.run import (
    Position,
    Run,
    check_run_config,
    open_records,
    open_run,
    whole_copy,
)
from prefalign.trainers.loop.rundir import RunFinished
from prefalign.trainers.loop.sharding import full_model_state, full_optimizer_state
from prefalign.trainers.loop.step import NonFiniteLoss, apply_update, step_metrics, train_step


@dataclass(frozen=True)
class RunResult:
    """How a run ended. outcome: completed | early_stopped | "failed: REASON".
    final_eval: the last held-out metrics (unprefixed names; empty without an eval split)."""

    run_dir: Path
    outcome: str
    steps: int
    final_eval: dict[str, float] = field(default_factory=dict)
    best_step: int | None = None


def train(config: Config, method: Method, *, resume: bool = False,
          tune_process: bool = False) -> RunResult:
    """Train `config`'s model with `method` in `run.output_dir/run.name`; `resume` continues
    its checkpoint. `tune_process`: apply the process-wide settings that make long runs faster
    and leaner (malloc keeps freed memory, unless `train.keep_freed_memory` says otherwise;
    oneDNN's kernel caches capped); the CLI asks for them, a library call by default not."""
    check_run_config(config)
    keep = config.train.keep_freed_memory
    if keep or (keep is None and tune_process):
        heap.keep_freed_memory()
    if tune_process:
        cap_kernel_caches()
    with cpu_matmul(config.train.cpu_matmul):
        return _train(config, method, resume)


def _train(config: Config, method: Method, resume: bool) -> RunResult:
    try:
        run, position = open_run(config, method, resume)
    except RunFinished as finished:
        print(f"prefalign: {finished}")
        return _finished_result(finished)
    try:
        open_records(run, position)
    except BaseException:
        _release(run)  # e.g. a full disk writing the manifest: the directory is free again
        raise
    progress = Progress(run.total_steps, position.global_step, run.global_batch, run.is_main,
                        unit=method.unit)
    health = HealthMonitor(method.identity_loss(), run.config.optim.warmup_steps,
                           position.health_fired)
    _announce(run, position, progress)
    try:
        outcome = _steps(run, position, progress, health)
        return _finish(run, position, progress, health, outcome)
    except NonFiniteLoss as error:
        return _fail(run, position, progress, error)
    except BaseException as error:
        _abort(run, progress, error)
        raise


def _steps(run: Run, position: Position, progress: Progress, health: HealthMonitor) -> str:
    """Optimiser steps until total_steps or an early stop; returns the outcome."""
    train = run.config.train
    while position.global_step < run.total_steps:
        metrics = _one_step(run, position, progress)
        step = position.global_step
        stop = False
        if train.eval_every and step % train.eval_every == 0 and "eval" in run.splits:
            stop = _evaluate(run, position)
        _check_health(run, position, health, progress)
        if train.save_every and step % train.save_every == 0:
            _save(run, position)
        progress.update(metrics)
        if stop:
            return "early_stopped"
    return "completed"


def _one_step(run: Run, position: Position, progress: Progress) -> dict[str, float] | None:
    """Train one step and log it; the metrics, or None when the step was skipped."""
    result = train_step(run, run.micro_batches(position), position.global_step)
    lr = run.scheduler.get_last_lr()[0]
    step = position.global_step + 1
    skipped = apply_update(run, result, step)
    position.advance(run.steps_per_epoch)
    if skipped:
        position.skipped_steps += 1
        progress.write(f"step {step}: non-finite loss or gradient, step skipped "
                       f"({position.skipped_steps} so far)")
        _log(run, step, {"skipped_steps": position.skipped_steps}, "train")
        return None
    metrics = step_metrics(run, result, lr)
    position.history = [*position.history, {"step": step, **metrics}][-WINDOW:]
    every = run.config.train.log_every  # 0: only the last step
    if (every and step % every == 0) or step == run.total_steps:
        _log(run, step, metrics, "train")
    return metrics


def _evaluate(run: Run, position: Position) -> bool:
    """Evaluate now, log it, and update early stopping; True when the run should stop."""
    metrics = evaluate(run)
    position.last_eval, position.last_eval_step = metrics, position.global_step
    _log(run, position.global_step, metrics, "eval")
    stop = run.stopping.update(position.global_step, metrics)
    position.early_stopping = run.stopping.state()
    return stop


def _check_health(run: Run, position: Position, health: HealthMonitor,
                  progress: Progress) -> None:
    events = health.check(position.global_step, position.history, position.last_eval)
    for event in events:
        progress.write(f"prefalign health [{event.name}] at step {event.step}: {event.message}")
        _log(run, event.step, {"event": event.name, "message": event.message}, "health")
        position.health_events.append(event.to_dict())
    position.health_fired = sorted(health.fired)
    if events and run.is_main:
        update_manifest(run.run_dir, health=position.health_events)


def _save(run: Run, position: Position) -> None:
    position.early_stopping = run.stopping.state()
    position.last_save_step = position.global_step
    policy = run.accelerator.unwrap_model(run.scorer).model
    weights = optimizer_state = None
    if run.sharded:  # every process takes part in gathering the whole tensors
        weights = full_model_state(policy, trainable_only=run.loaded.lora)
        optimizer_state = full_optimizer_state(policy, run.optimizer)
    if run.is_main:
        save_checkpoint(run.run_dir, position.global_step, policy=policy,
                        optimizer=run.optimizer, scheduler=run.scheduler,
                        position=position.to_dict(), keep_last=run.config.train.keep_last,
                        weights=weights, optimizer_state=optimizer_state)
    run.accelerator.wait_for_everyone()


def _log(run: Run, step: int, metrics: dict, split: str) -> None:
    if run.logger is not None:
        run.logger.log(step, metrics, split=split)


def _announce(run: Run, position: Position, progress: Progress) -> None:
    """Say once what the data decisions left out, and where a resumed run starts."""
    for name, split in run.splits.items():
        for warning in split.warnings:
            progress.write(f"data ({name}): {warning}")
    batches = run.steps_per_epoch // run.method.passes_per_batch
    left_out = len(run.splits["train"]) - batches * run.global_batch
    if left_out and position.global_step == 0:
        progress.write(f"{left_out} training {run.method.unit} do not fill a global batch of "
                       f"{run.global_batch}; each epoch leaves that many out (the next epoch's "
                       "order differs)")
    if run.resumed_from is not None:
        progress.write(f"resuming from {run.resumed_from} (step {position.global_step})")
    elif run.resume_requested:
        progress.write(f"nothing to resume in {run.run_dir} (no verified checkpoint); "
                       "starting from step 0")


def _finish(run: Run, position: Position, progress: Progress, health: HealthMonitor,
            outcome: str) -> RunResult:
    """Last evaluation, checkpoint and final/; the manifest's outcome; the summary."""
    if "eval" in run.splits and position.last_eval_step != position.global_step:
        _evaluate(run, position)
        _check_health(run, position, health, progress)
    if position.last_save_step != position.global_step:
        _save(run, position)
    progress.close()
    final = None
    policy = run.accelerator.unwrap_model(run.scorer).model
    if run.sharded:  # gathered on every process; the main process saves a whole copy
        policy = whole_copy(run.config, policy, run.method)
    if run.is_main:
        final = save_final(policy, run.loaded.tokenizer,
                           run.run_dir / "final", merge=run.config.lora.merge_on_save,
                           base_is_gguf=run.loaded.source.gguf_file is not None)
    result = RunResult(run.run_dir, outcome, position.global_step, position.last_eval or {},
                       run.stopping.best_step)
    _close(run, position, result, final=final)
    run.accelerator.wait_for_everyone()
    return result


def _finished_result(finished: RunFinished) -> RunResult:
    manifest = finished.manifest
    best = manifest.get("early_stopping", {}).get("best_step")
    return RunResult(finished.run_dir, manifest["outcome"], int(manifest.get("steps", 0)),
                     dict(manifest.get("final_eval") or {}), best)


def _fail(run: Run, position: Position, progress: Progress, error: NonFiniteLoss) -> RunResult:
    """Stop on a non-finite loss: no checkpoint is written over the last good one."""
    progress.close()
    outcome = f"failed: non-finite loss at step {error.step}"
    if run.is_main:
        print(f"prefalign: {error}")
    result = RunResult(run.run_dir, outcome, position.global_step, position.last_eval or {},
                       run.stopping.best_step)
    _close(run, position, result, non_finite={"step": error.step, "pair_ids": error.pair_ids})
    return result


def _abort(run: Run, progress: Progress, error: BaseException) -> None:
    """Record an interruption or crash in the manifest; the caller re-raises."""
    progress.close()
    manifest = None
    if run.is_main:
        manifest = record_failure(run.run_dir, error)
    if run.logger is not None:  # after the manifest: the trackers get its final state
        run.logger.close(manifest)
    _release(run)


def _release(run: Run) -> None:
    if run.lock is not None:
        run.lock.release()


def _close(run: Run, position: Position, result: RunResult, **fields: object) -> None:
    manifest = None
    if run.is_main:
        manifest = finish_manifest(
            run.run_dir, result.outcome, steps=result.steps,
            skipped_steps=position.skipped_steps, final_eval=result.final_eval,
            early_stopping={"metric": run.stopping.metric, **run.stopping.state()},
            health=position.health_events, **fields)
    if run.logger is not None:  # after the manifest: the trackers get its final state
        run.logger.close(manifest)
    _release(run)
    if run.is_main:
        print(format_summary(result.outcome, result.steps, result.final_eval, result.best_step))
