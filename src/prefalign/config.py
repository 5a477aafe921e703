"""Typed, frozen run configuration: YAML keys map 1:1 to fields; unknown keys are errors
(parsing in `prefalign.config_parse`, whose names are importable from here too).

Every field has its default here and only here. `load_config(path, overrides)` reads YAML,
applies `section.key=value` overrides, and validates everything before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prefalign.config_parse import (
    ConfigError,
    apply_override,
    build_dataclass,
    plain_data,
    read_yaml_mapping,
    suggest_key,
)
from prefalign.data.tokenize import DEFAULT_MAX_LENGTH

Dtype = Literal["float32", "bfloat16"]
Strategy = Literal["frozen_copy", "adapter_off", "precomputed", "none"]
Schedule = Literal["linear", "cosine", "constant"]
Tracker = Literal["tensorboard", "wandb", "mlflow"]


@dataclass(frozen=True)
class RunSection:
    """name: the run directory is `output_dir/name`. seed: seeds data order, init and dropout."""

    name: str = "run"
    output_dir: str = "runs"
    seed: int = 0


@dataclass(frozen=True)
class ModelSection:
    """source: a local HF directory (safetensors), a .gguf file, or an alias such as
    `smollm2-135m-instruct`. adapter: an existing LoRA adapter directory to start from (the
    reference is then the base model with that adapter, docs/training.md). trust_remote_code: off unless
    you ask. gradient_checkpointing: trade compute for activation memory, each decoder block
    recomputed in backward under the settings its forward pass ran with (engine/forward/recompute.py):
    true recomputes whole blocks; "pointwise" keeps the matrix products' and attention's
    outputs and recomputes only the elementwise operations (most of the memory `true` saves for
    a fraction of its extra time; docs/performance.md, "Gradient checkpointing")."""

    source: str = "smollm2-135m-instruct"
    dtype: Dtype = "float32"
    adapter: str | None = None
    trust_remote_code: bool = False
    gradient_checkpointing: bool | Literal["pointwise"] = False


@dataclass(frozen=True)
class LoraSection:
    """LoRA through peft; `enabled: false` means full fine-tuning. merge_on_save: write merged
    weights to `final/` instead of the adapter."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    merge_on_save: bool = False


@dataclass(frozen=True)
class DataSection:
    """train / eval: paths or `bundled:NAME`. limit_*: keep the first N pairs after shuffling
    (train) or in file order (eval). length_balance: keep as many pairs whose chosen reply is the
    shorter as pairs where it is the longer (counters a length bias the audit flags).
    cache_tokenized: keep the loaded, tokenised pairs under `$PREFALIGN_CACHE/tokenized/`
    (memory-mapped), keyed by the sources' bytes, tokenizer, template and truncation, so a
    later run on the same data skips loading and tokenising (DPO and its relatives)."""

    train: tuple[str, ...] = ("bundled:hh-harmless-train",)
    eval: tuple[str, ...] = ("bundled:hh-harmless-heldout",)
    format: str = "auto"
    on_error: Literal["raise", "skip"] = "raise"
    preference_axis: Literal["better", "safer"] = "better"
    max_length: int = DEFAULT_MAX_LENGTH
    max_prompt_length: int | None = None
    on_overflow: Literal["truncate", "drop", "raise"] = "truncate"
    limit_train: int | None = None
    limit_eval: int | None = None
    length_balance: bool = False
    cache_tokenized: bool = True


@dataclass(frozen=True)
class LossSection:
    """name: a key of `prefalign.losses.LOSSES` (a loss added with `prefalign.losses.register`
    only once the code registering it has run); params: its hyper-parameters (beta, ...), each
    checked against the type and bounds its loss declares; those left out take the loss's own
    defaults (DPO beta 0.1, SimPO beta 2.0 and gamma 1.0, ...)."""

    name: str = "dpo"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from prefalign.losses import LOSSES, make_loss

        if self.name in LOSSES:  # an unknown name is reported by check_config, with a suggestion
            try:
                loss = make_loss(self.name, **self.params)
            except ValueError as error:
                raise ConfigError(f"loss.params: {error}") from error
            # Record every hyper-parameter, typed, so the printed config and the manifest show
            # the values in effect, not only the ones the user wrote.
            object.__setattr__(self, "params", dict(loss.params))


@dataclass(frozen=True)
class ReferenceSection:
    """strategy: frozen_copy | adapter_off (LoRA only) | precomputed | none (reference-free
    losses). cache: file of precomputed reference log-probs; default under $PREFALIGN_CACHE.
    precision: "full" runs reference forwards in the model's dtype, outside `train.autocast`
    (float32 reference log-probs under bfloat16 autocast); "policy" runs them as the policy's
    forward runs, under `train.autocast`, so that policy and reference log-probs start out
    identical (TRL's way: faster, less exact; docs/performance.md). The same thing
    when `train.autocast` is off. source: the reference model when it is not the one training
    starts from (a model source or a run's final/ directory, in model.dtype; frozen_copy only),
    e.g. the original model in a later round of `prefalign loop`; null: model.source with
    model.adapter merged."""

    strategy: Strategy = "frozen_copy"
    cache: str | None = None
    precision: Literal["full", "policy"] = "full"
    source: str | None = None


@dataclass(frozen=True)
class SftSection:
    """`prefalign sft` only. loss_on: "all" assistant turns of a conversation carry the loss, or
    only the "last" (earlier ones are context, as in a single-answer data set)."""

    loss_on: Literal["all", "last"] = "all"


@dataclass(frozen=True)
class RmSection:
    """`prefalign rm train` only: the Bradley–Terry loss −log σ(r⁺ − r⁻ − m) + η·(r⁺ + r⁻)²
    (`prefalign.losses.bradley_terry_loss`). margin: read m from each pair's numeric `margin`
    field (Llama 2's margin; pairs without one take m = 0, and a non-numeric one is an error
    naming its file and line); false ignores the field (m = 0). centering: η, the reward-centring
    coefficient of Eisenstein et al. 2023 (0.01 in the paper; 0 = off)."""

    margin: bool = False
    centering: float = 0.0


@dataclass(frozen=True)
class GrpoSection:
    """`prefalign grpo` only (docs/grpo.md). prompts / eval_prompts: prompt files (the format
    `prefalign generate --prompts` reads; `kind` columns for the refusal judge); group_size: G
    completions sampled per prompt (≥ 2); mu: optimiser steps per sampled batch (μ ≥ 1);
    epsilon, epsilon_high: the clip range [1 − ε, 1 + ε_high] (ε_high null: ε); beta: the k3 KL
    coefficient (0: no reference is held); estimator: grpo (group-normalised advantages, scaled
    by `scale`: group | batch | none) or rloo (leave-one-out baseline, unscaled);
    normalisation: grpo | dr_grpo | dapo (how token losses are averaged); max_new_tokens,
    temperature, top_p, top_k: sampling; judges: `KIND[:TARGET][@WEIGHT]` specs, summed;
    harmful_judges / benign_judges: more specs, each scoring only the prompts of that `kind`
    (0 on the others) and added to the sum."""

    prompts: str | None = None
    eval_prompts: str | None = None
    group_size: int = 4
    mu: int = 1
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.0
    estimator: Literal["grpo", "rloo"] = "grpo"
    scale: Literal["group", "batch", "none"] = "group"
    normalisation: Literal["grpo", "dr_grpo", "dapo"] = "grpo"
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    judges: tuple[str, ...] = ("refusal",)
    harmful_judges: tuple[str, ...] = ()
    benign_judges: tuple[str, ...] = ()


@dataclass(frozen=True)
class OptimSection:
    """AdamW, `warmup_steps` of linear warm-up, then `schedule` decay to 0 at the last step.
    fused: torch's fused AdamW kernel (one pass over each tensor, no temporaries) where the
    parameters' device has it, else the plain per-tensor loop; the same update up to float
    rounding (tested within 1e-6 relative)."""

    lr: float = 5e-6
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: Schedule = "linear"
    max_grad_norm: float | None = 1.0
    fused: bool = True


@dataclass(frozen=True)
class TrainSection:
    """batch_size: examples (pairs, conversations) per micro-batch per process; grad_accum:
    micro-batches per optimiser
    step. max_steps: optimiser steps (default: `epochs` passes over the data). eval_every /
    save_every / log_every: in optimiser steps (0 = never, except eval and save at the end).
    early_stopping_patience: stop after this many evaluations without improving
    `early_stopping_metric` (0 = off). on_nan: stop naming the step and sample ids, or skip.
    scorer: "packed" computes each prompt once for chosen and rejected and packs pairs into rows
    without padding; "padded" is the plain (2B, T) forward. Same log-probs (within 1e-4).
    autocast: "bfloat16" runs the policy's decoder under torch.autocast (bfloat16 matmuls) while
    weights, gradients and optimiser state stay float32 (model.dtype must be float32); the
    vocabulary projection's logits, log-softmax and (unless `reference.precision: policy`)
    every reference log-prob stay float32. attention_blocks: the packed scorer attends within
    each pair's block of a row instead of over the whole row (same results, less attention
    work).
    cpu_matmul: "onednn" runs float32 CPU linear layers and the vocabulary projection through
    oneDNN instead of torch's default BLAS (MKL runs AVX2 kernels on AMD CPUs, oneDNN AVX-512;
    same float32 results within 1e-5); "auto" means onednn on x86-64
    CPUs whose torch has it when there is no CUDA device, "torch" leaves torch's default.
    sparse_embedding_grad: when the input embedding is tied to the output projection and trains
    (a full fine-tune of SmolLM2, say), its gradient goes as the rows of the batch's tokens into
    the projection's dense gradient (in place with the packed scorer, which then looks the
    embeddings up itself), instead of a zeroed (V × H) gradient of its own added to it (same
    gradient up to float32 summation order, one (V × H) tensor less per backward; not under
    fsdp, whose gradients are dense shards).
    fsdp: shard the policy's parameters, gradients and optimiser state over the processes of
    the launch with PyTorch FSDP2 (docs/distributed.md); a no-op on one process.
    keep_freed_memory: set glibc's malloc, for the whole process, to keep freed blocks for the
    next step instead of returning them to the system and faulting them in again (`heap`; on
    Linux with glibc only; same arithmetic, fewer page faults). null (the default) leaves it to
    the caller: the CLI turns it on, a library call only when asked (`tune_process=True`).
    logps_chunk_size: response rows projected to the vocabulary at a time. logps_keep_mib: MiB
    of the projection's float32 softmax a training forward keeps for backward, which then skips
    recomputing those chunks' logits (0: recompute all). Each switch's effect and current
    figures: docs/performance.md.
    report_to: where metrics go besides metrics.jsonl: tensorboard (events under the run
    directory), wandb, mlflow (optional extras: `pip install 'prefalign[wandb]'`; settings from
    their own environment variables, see engine/trackers.py); [] writes metrics.jsonl only."""

    batch_size: int = 4
    grad_accum: int = 1
    epochs: int = 1
    max_steps: int | None = None
    eval_every: int = 0
    eval_batch_size: int = 8
    save_every: int = 0
    keep_last: int = 2
    log_every: int = 1
    early_stopping_metric: str = "eval/loss"
    early_stopping_patience: int = 0
    on_nan: Literal["stop", "skip"] = "stop"
    logps_chunk_size: int = 1024
    logps_keep_mib: float = 256
    scorer: Literal["packed", "padded"] = "packed"
    threads: int | None = None
    autocast: Literal["off", "bfloat16"] = "off"
    attention_blocks: bool = True
    cpu_matmul: Literal["auto", "onednn", "torch"] = "auto"
    sparse_embedding_grad: bool = True
    fsdp: bool = False
    keep_freed_memory: bool | None = None
    report_to: tuple[Tracker, ...] = ("tensorboard",)


@dataclass(frozen=True)
class Config:
    """A whole run. Sections: run, model, lora, data, loss, reference, sft, rm, grpo, optim,
    train."""

    run: RunSection = field(default_factory=RunSection)
    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSection = field(default_factory=LoraSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    reference: ReferenceSection = field(default_factory=ReferenceSection)
    sft: SftSection = field(default_factory=SftSection)
    rm: RmSection = field(default_factory=RmSection)
    grpo: GrpoSection = field(default_factory=GrpoSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)

    def __post_init__(self) -> None:
        check_config(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists), as recorded in the manifest."""
        return plain_data(dataclasses.asdict(self))


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read YAML (or start from defaults when `path` is None), apply `section.key=value` overrides
    (values parsed as YAML: `lr=1e-5`, `target_modules=[q_proj,v_proj]`), and validate."""
    raw = read_yaml_mapping(path) if path is not None else {}
    for item in overrides:
        apply_override(raw, item)
    where = str(path) if path is not None else "config"
    return config_from_dict(raw, where)


def config_from_dict(raw: Mapping[str, Any], where: str = "config") -> Config:
    """Build a Config from nested dicts; unknown keys raise ConfigError with the closest name."""
    return build_dataclass(Config, raw, where)


def _positive(where: str, value: int | float | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if not (value > 0 or (allow_zero and value == 0)):  # written so that NaN fails too
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{where}: must be {bound}, got {value!r}")


def check_config(config: Config) -> None:
    """Cross-field checks that need no model; raises ConfigError naming the key."""
    from prefalign.losses import LOSSES  # the params of a known loss are checked by LossSection

    t, o = config.train, config.optim
    for name in ("batch_size", "grad_accum", "epochs", "eval_batch_size", "keep_last",
                 "logps_chunk_size"):
        _positive(f"train.{name}", getattr(t, name))
    for name in ("eval_every", "save_every", "log_every", "early_stopping_patience"):
        _positive(f"train.{name}", getattr(t, name), allow_zero=True)
    _positive("train.logps_keep_mib", t.logps_keep_mib, allow_zero=True)
    _positive("train.max_steps", t.max_steps)
    _positive("train.threads", t.threads)
    _positive("optim.lr", o.lr)
    if not (math.isfinite(config.rm.centering) and config.rm.centering >= 0):
        raise ConfigError(f"rm.centering: must be a finite number >= 0 (0.01 in Eisenstein et "
                          f"al. 2023; 0 = off), got {config.rm.centering!r}")
    _positive("optim.warmup_steps", o.warmup_steps, allow_zero=True)
    _positive("optim.max_grad_norm", o.max_grad_norm)
    _positive("lora.r", config.lora.r)
    _positive("data.limit_train", config.data.limit_train)
    _positive("data.limit_eval", config.data.limit_eval)
    if config.loss.name not in LOSSES:
        raise ConfigError(f"loss.name: unknown loss {config.loss.name!r}"
                          f"{suggest_key(config.loss.name, sorted(LOSSES))}")
    if not LOSSES[config.loss.name].paired and config.loss.name != "kto":
        raise ConfigError(f"loss.name: {config.loss.name!r} takes unpaired examples, and only "
                          "kto has an unpaired trainer (see docs/losses.md)")
    _check_reference(config)
    _check_grpo(config.grpo)
    if t.autocast != "off" and config.model.dtype != "float32":
        raise ConfigError(f"train.autocast: {t.autocast} autocast needs float32 master weights; "
                          f"set model.dtype: float32 (got {config.model.dtype})")


def _check_reference(config: Config) -> None:
    strategy = config.reference.strategy
    needs = _needs_reference(config.loss.name)
    if strategy == "none" and needs:
        raise ConfigError(f"reference.strategy: {config.loss.name!r} needs a reference; choose "
                          "frozen_copy, adapter_off (with LoRA) or precomputed")
    if strategy == "adapter_off" and not config.lora.enabled:
        raise ConfigError("reference.strategy: adapter_off needs lora.enabled: true "
                          "(or choose frozen_copy / precomputed)")
    if config.reference.source is not None and strategy != "frozen_copy":
        raise ConfigError(f"reference.source: a reference other than the starting model is "
                          f"held as a frozen copy; set reference.strategy: frozen_copy (got "
                          f"{strategy})")


def _check_grpo(grpo: GrpoSection) -> None:
    if grpo.group_size < 2:
        raise ConfigError(f"grpo.group_size: must be >= 2 (advantages compare completions of "
                          f"the same prompt), got {grpo.group_size!r}")
    _positive("grpo.mu", grpo.mu)
    _positive("grpo.max_new_tokens", grpo.max_new_tokens)
    if not 0 < grpo.epsilon < 1:  # written so that NaN fails too
        raise ConfigError(f"grpo.epsilon: must be in (0, 1), got {grpo.epsilon!r}")
    if grpo.epsilon_high is not None and not grpo.epsilon_high > 0:
        raise ConfigError(f"grpo.epsilon_high: must be > 0 (or null: epsilon), got "
                          f"{grpo.epsilon_high!r}")
    if not (math.isfinite(grpo.beta) and grpo.beta >= 0):
        raise ConfigError(f"grpo.beta: must be a finite number >= 0, got {grpo.beta!r}")
    if grpo.estimator == "rloo" and grpo.scale != "group":
        raise ConfigError("grpo.scale: rloo's leave-one-out advantages are not scaled; remove "
                          "grpo.scale or use estimator: grpo")
    if not (math.isfinite(grpo.temperature) and grpo.temperature > 0):
        raise ConfigError(f"grpo.temperature: must be > 0, got {grpo.temperature!r}")
    if not 0 < grpo.top_p <= 1:
        raise ConfigError(f"grpo.top_p: must be in (0, 1], got {grpo.top_p!r}")
    _positive("grpo.top_k", grpo.top_k, allow_zero=True)
    if not (grpo.judges or grpo.harmful_judges or grpo.benign_judges):
        raise ConfigError("grpo.judges: give at least one judge (e.g. [refusal])")


def _needs_reference(loss_name: str) -> bool:
    from prefalign.losses import LOSSES

    return LOSSES[loss_name].needs_reference
