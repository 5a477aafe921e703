"""GRPO's KL reference: per-token log-probs of the sampled completions under the starting model,
from the policy with its LoRA adapter switched off or from a frozen copy (grpo.beta > 0 only).

Each is scored once per sampled batch, under no_grad and in eval mode (no dropout), and reused
by the batch's μ passes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from prefalign.engine.forward.gather import eval_mode
from prefalign.engine.forward.token_logps import TokenLogpScorer
from prefalign.engine.models.load import load_reference_model

if TYPE_CHECKING:
    from prefalign.config import Config
    from prefalign.engine.models.load import LoadedModel


class TokenReference:
    """logps(batch) -> (B, C) reference log-probs of a rollout micro-batch's completions."""

    def __init__(self, scorer: nn.Module, strategy: str, policy: nn.Module | None = None,
                 details: dict[str, Any] | None = None):
        self.scorer, self.strategy, self.policy = scorer, strategy, policy
        self.details = details or {}

    def logps(self, batch: dict[str, Tensor]) -> Tensor:
        device = next(self.scorer.parameters()).device
        inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "labels")}
        with torch.no_grad(), eval_mode(self.scorer):
            if self.policy is not None:
                with self.policy.disable_adapter():
                    return self.scorer(**inputs).logps.cpu()
            return self.scorer(**inputs).logps.cpu()

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.strategy, **self.details}


def build_token_reference(config: Config, loaded: LoadedModel, scorer: nn.Module,
                          device: torch.device) -> TokenReference | None:
    """None with grpo.beta 0; else `reference.strategy`'s reference (checks.py allows
    frozen_copy and adapter_off)."""
    if config.grpo.beta == 0:
        return None
    if config.reference.strategy == "adapter_off":
        if not loaded.lora:
            raise ValueError("reference.strategy: adapter_off needs lora.enabled: true")
        return TokenReference(scorer, "adapter_off", policy=loaded.model)
    model = load_reference_model(config.model, expected_hash=loaded.weight_hash).to(device)
    copy = TokenLogpScorer(model, config.train.logps_chunk_size).requires_grad_(False)
    return TokenReference(copy, "frozen_copy", details={"weight_hash": loaded.weight_hash,
                                                        "adapter_merged": loaded.adapter})
