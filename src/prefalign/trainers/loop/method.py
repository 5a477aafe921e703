"""What a trainer tells the shared loop: its splits, what a batch is, and what its loss is.

The loop (loop.py, step.py, heldout.py) knows optimiser steps, accumulation, processes,
checkpoints and records; a `Method` knows the rest. Per micro-batch the loop asks the method for
per-example losses, sums them and divides by `loss_divisor` (so the accumulated gradient is
the gradient of the step's mean loss, whatever the method means by "mean"), and keeps the
detached per-example `Columns` the method returns, gathered over processes, for the method's
own metrics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor, nn

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from prefalign.config import Config
    from prefalign.engine.models.load import LoadedModel
    from prefalign.trainers.loop.run import Run

Columns = dict[str, Tensor]  # per-example numbers, each (B,); always "losses" and "index"


class Split(Protocol):
    """A split fixed before training: examples addressed by position, and what shaped them."""

    name: str
    fingerprint: str
    warnings: list[str]

    def __len__(self) -> int: ...

    def describe(self) -> dict[str, object]: ...

    def example_id(self, position: int) -> str: ...

    def example_tokens(self, position: int) -> int: ...


class Method(ABC):
    """One training method (DPO, SFT, reward model): everything the shared loop does not know."""

    name: str  # recorded in the manifest
    unit: str = "examples"  # what the progress bar counts ("pairs", "conversations", ...)
    # Optimiser steps each global batch of examples serves (GRPO's μ): step k of an epoch takes
    # batch k // passes_per_batch, and an epoch has passes_per_batch times as many steps.
    passes_per_batch: int = 1

    def load_model(self, config: Config) -> LoadedModel:
        """The model to train and its tokenizer (the loop moves it to the device); by default
        the causal LM that `model` and `lora` describe."""
        from prefalign.engine.models.load import load_model

        return load_model(config.model, config.lora)

    @abstractmethod
    def prepare_splits(self, config: Config, tokenizer: PreTrainedTokenizerBase,
                       rejects_dir: Path | None) -> dict[str, Split]:
        """{"train": ..., "eval": ...} ("eval" only when the config names held-out data)."""

    @abstractmethod
    def build_scorer(self, model: nn.Module, config: Config) -> nn.Module:
        """The module the loop wraps for DDP or shards for FSDP, and calls in `forward`."""

    def attach(self, config: Config, loaded: LoadedModel, scorer: nn.Module,
               splits: dict[str, Split], accelerator: Any) -> None:
        """Set up what the method needs once the model, scorer and splits exist (before
        sharding and before the optimiser); DPO builds its reference here."""
        return None

    def start(self, run: Run, resuming: bool) -> None:
        """Before the first step (after the resume point is known)."""
        return None

    @abstractmethod
    def make_batch(self, split: Split, indices: Tensor | Sequence[int],
                   pad_token_id: int) -> dict[str, Tensor]:
        """Tensors of those examples, plus "index" (B,): their positions in the split."""

    def step_batches(self, run: Run, step: int,
                     micro_batches: list[Tensor]) -> list[dict[str, Tensor]]:
        """The tensors of optimiser step `step` (0-based), one dict per micro-batch of indices;
        by default `make_batch` of each. An online method samples its batch here."""
        split = run.splits["train"]
        return [self.make_batch(split, indices, run.pad_token_id) for indices in micro_batches]

    @abstractmethod
    def forward(self, run: Run, scorer: nn.Module, batch: dict[str, Tensor],
                split: str) -> tuple[Tensor, Columns]:
        """Per-example losses (B,) with their graph, and detached columns ("losses", "index",
        and whatever the metrics need)."""

    def loss_divisor(self, run: Run, micro_batches: list[Tensor]) -> float:
        """What this process divides its summed losses by; default: its examples in the step."""
        return float(sum(len(indices) for indices in micro_batches))

    @abstractmethod
    def train_metrics(self, columns: Columns) -> dict[str, float]:
        """The logged summary of one step's gathered columns (grad_norm and lr are added)."""

    @abstractmethod
    def eval_metrics(self, run: Run, columns: Columns) -> dict[str, float]:
        """Held-out metrics (unprefixed names) from the whole split's columns, in split order."""

    def identity_loss(self) -> float | None:
        """The loss a model that has learned nothing scores (health check), if there is one."""
        return None

    def manifest_sections(self, run: Run) -> dict[str, Any]:
        """What the manifest records about the method (loss, reference, ...)."""
        return {}
