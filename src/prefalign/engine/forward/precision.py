"""The policy forward's precision: plain (the model's dtype) or bfloat16 autocast.

Under `train.autocast: bfloat16` the decoder's matmuls run in bfloat16 while the parameters,
their gradients and the optimiser state stay float32 ("master weights"). Three things stay
float32 on purpose:
- the vocabulary projection's log-probs: its logits and log-softmax (`ChunkedTokenLogps`
  multiplies with `out=` or oneDNN, which autocast leaves alone, and the final norm hands it
  float32 hidden states). Its backward's two gradient products take bfloat16 operands, as
  autocast's own layers' backward products do;
- the backward pass's casts back to float32 gradients (autocast's own rule);
- every reference log-prob, by default (`reference.precision: full`): reference forwards run
  outside this context. bfloat16 rounding moves a sequence's summed
  log-prob by about a tenth of a nat and does not cancel between two models whose weights
  differ, so a bfloat16 reference would add its own rounding to the implicit reward instead of
  removing the policy's (figures in docs/performance.md). A float32 reference is also shared
  with float32 runs (one cache).
  `reference.precision: policy` runs them inside it instead (`reference_autocast`), as TRL does.
"""

from __future__ import annotations

import contextlib

import torch

from prefalign.config import Config, TrainSection

AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16}


def policy_precision(train: TrainSection, device: torch.device) -> contextlib.AbstractContextManager:
    """The context the policy's forward runs in: autocast on `device`, or nothing."""
    return forward_precision(train.autocast, device)


def forward_precision(autocast: str, device: torch.device) -> contextlib.AbstractContextManager:
    """autocast "off": nothing; else torch.autocast on `device` to that dtype."""
    if autocast == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[autocast])


def reference_autocast(config: Config) -> str:
    """The autocast reference forwards run under: the policy's with `reference.precision:
    policy`, else "off"."""
    return config.train.autocast if config.reference.precision == "policy" else "off"
