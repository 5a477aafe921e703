"""`train.fsdp`: the policy's parameters, gradients and optimiser state sharded over processes.

prefalign applies PyTorch FSDP2 itself (`fully_shard` on each decoder block, then on the pair
scorer, which owns the embeddings, final norm and output projection), over every process of the
launch (`torchrun`, or `accelerate launch` with a plain multi-process config), on GPUs (NCCL)
and CPUs (gloo) alike. Under FSDP2 each parameter is a DTensor shard outside a forward pass;
inside its block's forward it is the whole tensor, so the scorer reads the output projection
whole. What the engine does differently when sharded:
- every forward is a collective, so held-out evaluation runs the same number of batches on every
  process (heldout.py);
- gradients are synchronised on the last micro-batch only (`gradient_sync`);
- the gradient norm is the norm of the whole gradient (`clip_gradients`);
- checkpoints and `final/` hold whole tensors gathered on every process (`full_model_state`,
  `full_optimizer_state`) and are read back into shards (`load_full_model_state`, ...).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from prefalign.engine.forward.scorer import decoder_blocks


def shard(scorer: nn.Module, model: nn.Module, device: torch.device) -> None:
    """Shard `scorer` (which holds `model`) over the world: each decoder block is one FSDP2
    unit, the scorer the root unit holding the rest. Needs an initialised process group.
    With `model.gradient_checkpointing`, only a block's `forward` is recomputed (recompute.py),
    so the hooks that gather its parameters run once."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    for block in decoder_blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(scorer, mesh=mesh)


def is_sharded(module: nn.Module) -> bool:
    """True when `module`'s parameters are FSDP2 shards (DTensors)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


@contextlib.contextmanager
def gradient_sync(scorer: nn.Module, sync: bool) -> Iterator[None]:
    """Under FSDP2, reduce-scatter gradients only when `sync` (the last micro-batch of a step);
    the gradients of the earlier micro-batches accumulate whole on each process meanwhile."""
    scorer.set_requires_gradient_sync(sync)  # type: ignore[operator]
    try:
        yield
    finally:
        scorer.set_requires_gradient_sync(True)  # type: ignore[operator]


def clip_gradients(parameters: Iterable[nn.Parameter], max_norm: float) -> float:
    """Clip sharded gradients to `max_norm` by the norm of the whole gradient; return that norm."""
    from torch.distributed.tensor import DTensor

    norm = torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    return float(norm)


def full_model_state(model: nn.Module, trainable_only: bool = False) -> dict[str, Tensor]:
    """The whole state dict on the CPU of the main process ({} on the others); run it on every
    process (it gathers). Tied parameters appear under each of their names. `trainable_only`
    gathers just the parameters that train (a LoRA adapter's), not the frozen base."""
    if trainable_only:
        return _gather_trainable(model)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def _gather_trainable(model: nn.Module) -> dict[str, Tensor]:
    from torch.distributed.tensor import DTensor

    main = torch.distributed.get_rank() == 0
    state = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:  # the same names in the same order on every process
            whole = parameter.full_tensor() if isinstance(parameter, DTensor) else parameter
            if main:
                state[name] = whole.detach().cpu()
    return state


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimiser state with whole tensors, keyed by parameter name, on the CPU of the main
    process ({} on the others); run it on every process."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, _inner(optimizer), options=options)


def load_full_model_state(model: nn.Module, state: dict[str, Tensor], strict: bool = True) -> None:
    """Load a whole state dict (read by every process) into the shards; with `strict` every key
    must match, without it `state` may hold only some of the model's names (an adapter's)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    options = StateDictOptions(full_state_dict=True, strict=strict)
    result = set_model_state_dict(model, state, options=options)
    if result.unexpected_keys or (strict and result.missing_keys):
        raise ValueError(f"weights do not match the model: missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load an optimiser state saved by `full_optimizer_state` into the shards' optimiser."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    set_optimizer_state_dict(model, _inner(optimizer), state,
                             options=StateDictOptions(full_state_dict=True))


def _inner(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimiser inside accelerate's wrapper, if any."""
    return getattr(optimizer, "optimizer", optimizer)
