"""The policy forward's precision: plain (the model's dtype) or bfloat16 autocast.

Under `train.autocast: bfloat16` the decoder's matmuls run in bfloat16 while the parameters,
their gradients and the optimiser state stay float32 ("master weights"). Three things stay
float32 on purpose:
- the vocabulary projection's log-probs: its logits and log-softmax (`ChunkedTokenLogps`
  multiplies with `out=` or oneDNN, which autocast leaves alone, and the final norm hands it
  float32 hidden states). Its backward's two gradient products take bfloat16 operands, as
  autocast's own layers' backward products do;
- the backward pass's casts back to float32 gradients (autocast's own rule);
- every reference log-prob: reference forwards run outside this context. Measured on
  SmolLM2-135M: bfloat16 rounding moves a sequence's summed log-prob by ~0.13 nats (64 hh-rlhf
  pairs) and does not cancel between two models whose weights differ (48 pairs, policy weights
  perturbed as training would), so a bfloat16 reference adds its own error to the implicit reward
  (mean error of the margin change 0.23 nats) instead of removing the policy's (0.17-0.20 with a
  float32 reference). A float32 reference is also shared with float32 runs (one cache).
"""

from __future__ import annotations

import contextlib

import torch

from prefalign.config import TrainSection

AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16}


def policy_precision(train: TrainSection, device: torch.device) -> contextlib.AbstractContextManager:
    """The context the policy's forward runs in: autocast on `device`, or nothing."""
    if train.autocast == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[train.autocast])
