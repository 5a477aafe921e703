"""AdamW over the trainable parameters and a warm-up-then-decay learning-rate schedule."""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from prefalign.config import OptimSection, Schedule

# Devices with a fused AdamW kernel in torch >= 2.4 (the documented ones).
FUSED_DEVICES = frozenset({"cpu", "cuda", "mps", "xpu"})


def build_optimizer(model: nn.Module, optim: OptimSection) -> torch.optim.AdamW:
    """AdamW over parameters that require grad; no weight decay on 1-D ones (biases, norms),
    whose decay would only pull gains and offsets towards 0. With `optim.fused`, torch's fused
    kernel where the parameters' device has one (CPU and CUDA do), else the per-tensor loop."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters (check lora.target_modules)")
    groups = [{"params": decay, "weight_decay": optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    fused = optim.fused and all(p.is_floating_point() and p.device.type in FUSED_DEVICES
                                for p in [*decay, *no_decay])
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps,
                             fused=fused or None)


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: Schedule) -> float:
    """Multiplier of the peak learning rate for optimiser step `step` (0-based).

    Linear warm-up from 0 over `warmup_steps`, then linear or cosine decay reaching 0 at
    `total_steps`, or constant. The same curves as transformers' schedulers of those names.
    """
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def follow_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Set the learning rates this config's schedule gives at the scheduler's restored step.

    A checkpoint restores the rates its own run reached, and a resumed run may have a longer
    schedule (a larger `train.max_steps`): a linear decay that ended at 0 would otherwise train
    the first resumed step at 0."""
    step = scheduler.last_epoch
    groups = scheduler.optimizer.param_groups
    for group, base, factor in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base * factor(step)
    scheduler._last_lr = [group["lr"] for group in groups]  # what get_last_lr() reports


def build_scheduler(
    optimizer: torch.optim.Optimizer, optim: OptimSection, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per optimiser step (skipped steps included, so the schedule follows data)."""
    factor = functools.partial(lr_factor, warmup_steps=optim.warmup_steps,
                               total_steps=total_steps, schedule=optim.schedule)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
