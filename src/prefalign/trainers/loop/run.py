"""Opening a run: the run directory, model, data, the method's set-up, optimiser, resume point and
records.

Everything the loop needs lives in one `Run`; the mutable data position and bookkeeping that
a checkpoint carries live in `Position`. Files are written by the main process only.
"""

from __future__ import annotations

import gc
import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prefalign.config import Config, ConfigError
from prefalign.engine.forward import onednn
from prefalign.engine.forward.scorer import sparse_tied_embedding_grad
from prefalign.engine.logger import MetricsLogger
from prefalign.engine.manifest import MANIFEST, start_manifest
from prefalign.engine.models.load import LoadedModel
from prefalign.engine.trackers import check_trackers, open_trackers
from prefalign.trainers.loop.batches import (
    epoch_permutation,
    global_batch_size,
    micro_batch_indices,
    steps_per_epoch,
)
from prefalign.trainers.loop.checkpoint import load_checkpoint
from prefalign.trainers.loop.method import Method, Split
from prefalign.trainers.loop.optim import build_optimizer, build_scheduler, follow_schedule
from prefalign.trainers.loop.rundir import (
    RunDirError,
    RunFinished,
    RunLock,
    claim,
    finished_outcome,
    remove_unstarted,
)
from prefalign.trainers.loop.sharding import full_model_state, shard
from prefalign.trainers.loop.stopping import EarlyStopping, metric_key
from prefalign.trainers.loop.verify import resume_checkpoint


@dataclass
class Position:
    """Where the run is and what it has seen: saved in every checkpoint as position.json."""

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    skipped_steps: int = 0
    global_batch: int = 0
    train_fingerprint: str = ""
    early_stopping: dict[str, Any] = field(default_factory=dict)
    health_fired: list[str] = field(default_factory=list)
    health_events: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)  # the last few train logs
    last_eval: dict[str, float] | None = None
    last_eval_step: int | None = None
    last_save_step: int | None = None

    def advance(self, steps_per_epoch: int) -> None:
        self.global_step += 1
        self.step_in_epoch += 1
        if self.step_in_epoch == steps_per_epoch:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Run:
    """The objects of one training run (see `open_run`)."""

    config: Config
    accelerator: Any  # accelerate.Accelerator
    run_dir: Path
    loaded: LoadedModel
    method: Method
    splits: dict[str, Split]
    scorer: nn.Module  # build_scorer(...), wrapped by accelerate (DDP) or sharded (FSDP2)
    trainable: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    pad_token_id: int
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    stopping: EarlyStopping
    logger: MetricsLogger | None = None
    resumed_from: Path | None = None
    resume_requested: bool = False
    sharded: bool = False  # train.fsdp on more than one process: the scorer is FSDP2-sharded
    lock: RunLock | None = None  # the main process's claim on run_dir (rundir.py)
    _permutations: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    def micro_batches(self, position: Position) -> list[torch.Tensor]:
        """This process's micro-batch indices for the step at `position`."""
        if position.epoch not in self._permutations:
            self._permutations = {position.epoch: epoch_permutation(
                len(self.splits["train"]), self.config.run.seed, position.epoch)}
        train = self.config.train
        return micro_batch_indices(
            self._permutations[position.epoch],
            position.step_in_epoch // self.method.passes_per_batch,
            batch_size=train.batch_size, grad_accum=train.grad_accum,
            rank=self.accelerator.process_index, world_size=self.accelerator.num_processes)


def run_directory(config: Config) -> Path:
    return Path(config.run.output_dir) / config.run.name


def check_run_config(config: Config) -> None:
    """Run-level checks the config section cannot make alone; raises ConfigError."""
    train = config.train
    try:
        onednn.resolve(train.cpu_matmul)
    except ValueError as error:
        raise ConfigError(f"train.{error}") from None
    check_trackers(train.report_to)
    if train.early_stopping_patience:
        metric_key(train.early_stopping_metric)
        if not config.data.eval or not train.eval_every:
            raise ConfigError("train.early_stopping_patience: early stopping needs held-out "
                              "evaluations; set data.eval and train.eval_every > 0")


def check_run_dir(run_dir: Path, resume: bool, config: Config | None = None,
                  announce: bool = True) -> Path | None:
    """The checkpoint to resume from (the newest verified one: `announce` warns of each newer
    one skipped), or None for a fresh start; refuses to overwrite a run and raises RunFinished
    when asked to resume one that finished under the same config."""
    has_manifest = (run_dir / MANIFEST).exists()
    if has_manifest and not resume:
        raise RunDirError(f"{run_dir} already holds a run ({MANIFEST}); pass --resume to "
                          "continue it, or choose a new run.name")
    finished = finished_outcome(run_dir, config.to_dict()) if resume and config else None
    if finished is not None:
        raise RunFinished(run_dir, finished)
    return resume_checkpoint(run_dir, announce=announce) if resume else None


def make_accelerator(config: Config) -> Any:
    """An Accelerator (CPU when there is no CUDA), threads set and everything seeded."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if config.train.threads is not None:
        torch.set_num_threads(config.train.threads)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    _refuse_accelerate_sharding(accelerator)
    set_seed(config.run.seed)
    if accelerator.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Filling every new tensor with NaN only catches reads of uninitialised memory, and
        # costs time on each allocation; the algorithms stay deterministic without it.
        torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    return accelerator


def _refuse_accelerate_sharding(accelerator: Any) -> None:
    """accelerate's own FSDP and DeepSpeed wrappers do not fit the engine (docs/distributed.md)."""
    kind = str(accelerator.distributed_type).rsplit(".", 1)[-1]
    if kind == "FSDP":
        raise ConfigError("the accelerate config selects FSDP; prefalign shards the model "
                          "itself: launch with a plain multi-process config (distributed_type: "
                          "MULTI_GPU) and set train.fsdp: true")
    if kind == "DEEPSPEED":
        raise ConfigError("the accelerate config selects DeepSpeed, which prefalign does not "
                          "support; use train.fsdp: true for sharding (docs/distributed.md)")


def end_processes() -> None:
    """Destroy the distributed process group, if one was made (`torchrun`, `accelerate launch`),
    before the process exits, as torch asks; first collect the garbage, so that the models and
    their DDP or FSDP state, which sit in reference cycles, go while the group is still alive.
    Left to interpreter shutdown they abort the process after a finished run ("terminate called
    without an active exception"): a 2-process FSDP2 script over gloo did so at exit in 7 of 20
    runs, with `gc.collect()` first in none of 30."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gc.collect()
        torch.distributed.destroy_process_group()


def open_run(config: Config, method: Method, resume: bool) -> tuple[Run, Position]:
    """Claim the run directory, build everything, restore the checkpoint when resuming, and
    start the method (`check_run_config` has passed). A directory this call created is removed
    again when any of that fails, so a run that never started leaves nothing behind."""
    accelerator = make_accelerator(config)
    run_dir = run_directory(config)
    lock, created = claim(run_dir) if accelerator.is_main_process else (None, False)
    try:
        checkpoint = check_run_dir(run_dir, resume, config,
                                   announce=accelerator.is_main_process)
        accelerator.wait_for_everyone()  # every process has checked before the main one writes
        run, position = _build(config, method, accelerator, run_dir, checkpoint)
        run.resume_requested, run.lock = resume, lock
        method.start(run, run.resumed_from is not None)
    except BaseException:
        if lock is not None:
            lock.release()
        remove_unstarted(run_dir, created)
        raise
    return run, position


def _build(config: Config, method: Method, accelerator: Any, run_dir: Path,
           checkpoint: Path | None) -> tuple[Run, Position]:
    loaded = method.load_model(config)
    loaded.model.to(accelerator.device).train()
    rejects = run_dir if accelerator.is_main_process else None
    splits = method.prepare_splits(config, loaded.tokenizer, rejects)
    _steps_per_epoch(config, splits, accelerator, method)  # before a reference pass
    scorer = method.build_scorer(loaded.model, config)
    method.attach(config, loaded, scorer, splits, accelerator)
    sharded = config.train.fsdp and accelerator.num_processes > 1
    if sharded:  # before the optimiser is built: FSDP2 replaces the parameters with shards
        shard(scorer, loaded.model, accelerator.device)
    run = _assemble(config, accelerator, run_dir, loaded, method, splits, scorer)
    run.sharded = sharded
    position = Position(global_batch=run.global_batch,
                        train_fingerprint=splits["train"].fingerprint)
    if checkpoint is not None:
        position = _restore(run, checkpoint, position)
        run.resumed_from = checkpoint
    # The scheduler stays unprepared: accelerate would step it once per process.
    if sharded:
        run.optimizer = accelerator.prepare(run.optimizer)
    else:
        run.scorer, run.optimizer = accelerator.prepare(scorer, run.optimizer)
        if config.train.sparse_embedding_grad:
            sparse_tied_embedding_grad(loaded.model)  # after prepare: see its docstring
    return run, position


def whole_copy(config: Config, policy: nn.Module, method: Method) -> nn.Module | None:
    """On the main process, an unsharded copy of the sharded `policy` built from the config and
    loaded with its gathered tensors (None on the others); run it on every process. With LoRA
    only the adapter is gathered: the copy's frozen base is the one the run started from."""
    lora = config.lora.enabled
    weights = full_model_state(policy, trainable_only=lora)
    if torch.distributed.get_rank() != 0:
        return None
    copy = method.load_model(config).model
    result = copy.load_state_dict(weights, strict=not lora)
    if result.unexpected_keys:
        raise ValueError(f"gathered weights the model lacks: {result.unexpected_keys[:5]}")
    return copy


def _assemble(
    config: Config, accelerator: Any, run_dir: Path, loaded: LoadedModel, method: Method,
    splits: dict[str, Split], scorer: nn.Module,
) -> Run:
    global_batch = global_batch_size(config, accelerator.num_processes)
    per_epoch = _steps_per_epoch(config, splits, accelerator, method)
    total = config.train.max_steps or config.train.epochs * per_epoch
    optimizer = build_optimizer(loaded.model, config.optim)
    stopping = EarlyStopping(config.train.early_stopping_metric,
                             config.train.early_stopping_patience)
    return Run(
        config=config, accelerator=accelerator, run_dir=run_dir, loaded=loaded, method=method,
        splits=splits,
        scorer=scorer, trainable=[p for p in loaded.model.parameters() if p.requires_grad],
        optimizer=optimizer, scheduler=build_scheduler(optimizer, config.optim, total),
        pad_token_id=int(loaded.tokenizer.pad_token_id), global_batch=global_batch,
        steps_per_epoch=per_epoch, total_steps=total, stopping=stopping)


def _steps_per_epoch(config: Config, splits: dict[str, Split], accelerator: Any,
                     method: Method) -> int:
    """Optimiser steps per epoch: whole global batches, each used `passes_per_batch` times."""
    global_batch = global_batch_size(config, accelerator.num_processes)
    per_epoch = steps_per_epoch(len(splits["train"]), global_batch) * method.passes_per_batch
    if per_epoch == 0:
        raise ConfigError(f"data.train: {len(splits['train'])} {method.unit} are fewer than one "
                          f"global batch of {global_batch} (train.batch_size × train.grad_accum × "
                          f"{accelerator.num_processes} process(es)); lower the batch size")
    return per_epoch


def _restore(run: Run, checkpoint: Path, fresh: Position) -> Position:
    """Load weights, optimiser, scheduler and RNG; refuse a checkpoint of other data or batch."""
    saved = load_checkpoint(checkpoint, policy=run.loaded.model, optimizer=run.optimizer,
                            scheduler=run.scheduler)
    follow_schedule(run.scheduler)
    position = Position(**saved)
    for name, label in (("train_fingerprint", "training data (fingerprint)"),
                        ("global_batch", "global batch size")):
        if getattr(position, name) != getattr(fresh, name):
            raise RunDirError(
                f"cannot resume from {checkpoint}: its {label} was {getattr(position, name)}, "
                f"this config gives {getattr(fresh, name)}; resuming needs the same data order. "
                "Start a new run.name instead")
    for key, value in position.early_stopping.items():
        setattr(run.stopping, key, value)
    return position


def open_records(run: Run, position: Position) -> None:
    """The metrics logger and manifest (main process); call after the resume point is known."""
    resume_step = position.global_step if run.resumed_from is not None else None
    trackers = open_trackers(run.config, run.run_dir, resumed=resume_step is not None) \
        if run.is_main else []
    run.logger = MetricsLogger(run.run_dir, resume_step=resume_step, enabled=run.is_main,
                               tensorboard="tensorboard" in run.config.train.report_to,
                               trackers=trackers)
    if run.is_main:
        run.logger.record_manifest(start_manifest(
            run.run_dir, run.config, resume_step=resume_step, **manifest_sections(run),
            trackers={tracker.name: tracker.describe() for tracker in trackers}))


def manifest_sections(run: Run) -> dict[str, Any]:
    """What the run is made of, for the manifest (besides the config and environment)."""
    template = run.loaded.tokenizer.chat_template or ""
    template_text = template if isinstance(template, str) else repr(template)
    return {
        "data": {name: split.describe() for name, split in run.splits.items()},
        "chat_template": {"sha256": hashlib.sha256(template_text.encode("utf-8")).hexdigest(),
                          "text": template_text},
        "model": run.loaded.describe(),
        "method": run.method.name,
        **run.method.manifest_sections(run),
        "seed": run.config.run.seed,
        "schedule": {"global_batch": run.global_batch, "processes":
                     run.accelerator.num_processes, "steps_per_epoch": run.steps_per_epoch,
                     "total_steps": run.total_steps, "pairs_left_out_per_epoch":
                     len(run.splits["train"]) - run.global_batch *
                     (run.steps_per_epoch // run.method.passes_per_batch)},
    }
