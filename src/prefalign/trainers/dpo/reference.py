"""Reference log-probs for a batch: frozen copy, adapter switched off, precomputed, or none.

Every reference forward runs under no_grad with the model in eval mode (no dropout) and
returns detached tensors, outside `train.autocast` unless `reference.precision` is "policy"
(`precision.reference_autocast`). What the reference is when training starts from an existing
adapter (`model.adapter`): frozen_copy and precomputed use the base model with that adapter
merged, as it was at the start; adapter_off uses the base model WITHOUT it (a warning says so).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from prefalign.config import Config, TrainSection
from prefalign.data.collate import collate_pairs
from prefalign.engine.forward.gather import eval_mode, logps_to_cpu, scatter_logps
from prefalign.engine.forward.precision import forward_precision, reference_autocast
from prefalign.engine.forward.select import build_scorer
from prefalign.engine.models.load import load_reference_model, weight_hash
from prefalign.losses import PairLogps
from prefalign.trainers.loop.refcache import CachePlan, plan_cache, read_cache, write_cache

if TYPE_CHECKING:
    from accelerate import Accelerator

    from prefalign.engine.models.load import LoadedModel
    from prefalign.trainers.dpo.data import TokenizedSplit

logger = logging.getLogger(__name__)

BATCH_TENSORS = ("chosen_input_ids", "chosen_attention_mask", "chosen_labels",
                 "rejected_input_ids", "rejected_attention_mask", "rejected_labels")


class Reference:
    """`logps(batch, split)` -> the reference's PairLogps for a collated batch (None: no reference).

    `batch` is a `collate_pairs` dict plus "index" (B,): the pairs' positions in `split`.
    """

    strategy = "none"

    def logps(self, batch: Mapping[str, Tensor], split: str) -> PairLogps | None:
        return None

    def describe(self) -> dict[str, Any]:
        """JSON-able description for the run manifest."""
        return {"strategy": self.strategy}


class FrozenCopyReference(Reference):
    """A second model, frozen, in eval mode; moved to the batch's device on first use."""

    strategy = "frozen_copy"

    def __init__(self, model: nn.Module, train: TrainSection, details: dict[str, Any],
                 autocast: str = "off"):
        self.scorer = build_scorer(model, train).eval().requires_grad_(False)
        self.details = details
        self.autocast = autocast

    def logps(self, batch: Mapping[str, Tensor], split: str) -> PairLogps:
        device = batch["chosen_input_ids"].device
        if _device_of(self.scorer) != device:
            self.scorer.to(device)
        return score(self.scorer, batch, self.autocast)

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "autocast": self.autocast, **self.details}


class AdapterOffReference(Reference):
    """The policy itself with its LoRA adapter disabled: no second copy of the weights."""

    strategy = "adapter_off"

    def __init__(self, policy: nn.Module, scorer: Callable[..., PairLogps], note: str | None,
                 autocast: str = "off"):
        self.policy = policy  # the PeftModel whose adapter is switched off
        self.scorer = scorer  # the policy's scorer, possibly wrapped for distributed training
        self.note = note
        self.autocast = autocast

    def logps(self, batch: Mapping[str, Tensor], split: str) -> PairLogps:
        with self.policy.disable_adapter(), eval_mode(self.policy):
            return score(self.scorer, batch, self.autocast)

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "autocast": self.autocast, "note": self.note}


class PrecomputedReference(Reference):
    """Log-probs computed once before training, looked up by the batch's pair positions."""

    strategy = "precomputed"

    def __init__(self, tables: dict[str, PairLogps], plans: dict[str, CachePlan],
                 autocast: str = "off"):
        self.tables = tables  # split name -> PairLogps of (N,) tensors on the CPU
        self.plans = plans
        self.autocast = autocast

    def logps(self, batch: Mapping[str, Tensor], split: str) -> PairLogps:
        table = self.tables[split]
        index = batch["index"].to("cpu")  # (B,)
        device = batch["chosen_input_ids"].device
        return PairLogps(
            chosen=table.chosen[index].to(device),
            rejected=table.rejected[index].to(device),
            chosen_count=table.chosen_count[index].to(device),
            rejected_count=table.rejected_count[index].to(device),
        )

    def describe(self) -> dict[str, Any]:
        splits = {
            name: {"cache": str(plan.path), "key_sha256": plan.key_digest, "reused": plan.reusable,
                   **({"recomputed_because": plan.problem} if plan.problem else {})}
            for name, plan in self.plans.items()
        }
        return {"strategy": self.strategy, "autocast": self.autocast, "splits": splits}


def build_reference(
    config: Config,
    loaded: LoadedModel,
    scorer: Callable[..., PairLogps],
    splits: Mapping[str, TokenizedSplit],
    accelerator: Accelerator | None = None,
) -> Reference:
    """The reference named by `config.reference.strategy`.

    scorer: the policy's scorer (a PairScorer, possibly wrapped by accelerate); adapter_off runs
    it with the adapter disabled. splits: {"train": ..., "eval": ...} for precomputed.
    accelerator: in multi-process runs precomputed is computed by each node's main process.
    """
    strategy = config.reference.strategy
    if strategy == "none":
        return Reference()
    if strategy == "frozen_copy":
        model, details = _frozen_model(config, loaded)
        return FrozenCopyReference(model, config.train, details, reference_autocast(config))
    if strategy == "adapter_off":
        return _adapter_off(loaded, scorer, reference_autocast(config))
    if strategy == "precomputed":
        return build_precomputed(config, loaded, splits, accelerator)
    raise ValueError(f"reference.strategy: unknown strategy {strategy!r}")


def _frozen_model(config: Config, loaded: LoadedModel) -> tuple[nn.Module, dict[str, Any]]:
    """The starting model read again (its base weights checked against the policy's), or the
    model `reference.source` names."""
    source = config.reference.source
    if source is None:
        model = load_reference_model(config.model, expected_hash=loaded.weight_hash)
        return model, {"weight_hash": loaded.weight_hash, "adapter_merged": loaded.adapter}
    model = load_reference_model(replace(config.model, source=source, adapter=None))
    return model, {"source": source, "weight_hash": weight_hash(model)}


def _adapter_off(
    loaded: LoadedModel, scorer: Callable[..., PairLogps], autocast: str
) -> AdapterOffReference:
    if not loaded.lora:
        raise ValueError("reference.strategy: adapter_off needs lora.enabled: true")
    note = None
    if loaded.adapter is not None:
        note = (f"the reference is the base model WITHOUT the starting adapter {loaded.adapter}; "
                f"use frozen_copy or precomputed to compare against base + that adapter")
        logger.warning("reference.strategy adapter_off: %s", note)
    return AdapterOffReference(loaded.model, scorer, note, autocast)


def build_precomputed(
    config: Config,
    loaded: LoadedModel,
    splits: Mapping[str, TokenizedSplit],
    accelerator: Accelerator | None = None,
) -> PrecomputedReference:
    """Reuse or compute (then cache) every split's reference log-probs; see refcache."""
    plans = {name: plan_cache(config, loaded, split) for name, split in splits.items()}
    missing = [name for name, plan in plans.items() if not plan.reusable]
    computes = accelerator is None or accelerator.is_local_main_process
    autocast = reference_autocast(config)
    if computes:
        for plan in plans.values():
            if plan.problem is not None:
                print(f"prefalign: reference cache {plan.path} ({plan.split}) is not reused: "
                      f"{plan.problem}; recomputing it", file=sys.stderr)
    if missing and computes:
        device = accelerator.device if accelerator is not None else _device_of(loaded.model)
        with starting_policy(config, loaded, device) as scorer:
            for name in missing:
                logps = score_split(scorer, splits[name], loaded.tokenizer.pad_token_id,
                                    config.train.eval_batch_size, autocast)
                write_cache(plans[name].path, plans[name].key, logps)
    if accelerator is not None:
        accelerator.wait_for_everyone()  # the other processes read what their main wrote
    tables = {name: read_cache(plan.path, plan.key, len(splits[name].tokenized))
              for name, plan in plans.items()}
    return PrecomputedReference(tables, plans, autocast)


@contextlib.contextmanager
def starting_policy(config: Config, loaded: LoadedModel, device: torch.device) -> Iterator[nn.Module]:
    """A scorer of the policy as training starts, for a pass before the first step.

    Without a starting adapter that is the policy itself (LoRA: with its fresh adapter switched
    off, so exactly the base): no second copy of the weights to read, hash and hold, and the
    pages the pass touches are the ones training uses. With `model.adapter` it is a copy of the
    base with that adapter merged, as `frozen_copy` uses (merged weights round differently from
    the policy's separate adapter product), released after the pass.
    """
    if loaded.adapter is None:
        with (loaded.model.disable_adapter() if loaded.lora else contextlib.nullcontext()):
            yield build_scorer(loaded.model, config.train)
        return
    model = load_reference_model(config.model, expected_hash=loaded.weight_hash).to(device)
    yield build_scorer(model, config.train)  # released on return: none during training


def score_split(
    scorer: nn.Module, split: TokenizedSplit, pad_token_id: int, batch_size: int,
    autocast: str = "off",
) -> PairLogps:
    """Reference log-probs of every pair of `split`, in split order, as (N,) CPU tensors.

    Pairs are scored in order of length so that batches carry little padding.
    """
    pairs = split.tokenized
    order = sorted(range(len(pairs)), key=lambda i: _pair_length(pairs[i]))
    device = _device_of(scorer)
    parts: list[tuple[Tensor, PairLogps]] = []
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=f"reference log-probs ({split.name})", leave=False):
        index = torch.tensor(order[start : start + batch_size], dtype=torch.long)  # (B,)
        batch = collate_pairs([pairs[i] for i in index.tolist()], pad_token_id)
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        with eval_mode(scorer):
            parts.append((index, logps_to_cpu(score(scorer, batch, autocast))))
    return scatter_logps(parts, len(pairs))


def score(
    scorer: Callable[..., PairLogps], batch: Mapping[str, Tensor], autocast: str = "off"
) -> PairLogps:
    """One no_grad forward of the six batch tensors (under `autocast`); results detached."""
    device = batch["chosen_input_ids"].device
    with torch.no_grad(), forward_precision(autocast, device):
        logps = scorer(**{name: batch[name] for name in BATCH_TENSORS})
    return PairLogps(
        chosen=logps.chosen.detach(),
        rejected=logps.rejected.detach(),
        chosen_count=logps.chosen_count,
        rejected_count=logps.rejected_count,
    )


def _pair_length(pair: Any) -> int:
    return len(pair.prompt_ids) + max(len(pair.chosen_ids), len(pair.rejected_ids))


def _device_of(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
