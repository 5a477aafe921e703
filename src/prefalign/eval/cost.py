"""The cost of alignment: how far the policy moved from the reference where it should not have.

* Perplexity of reference responses (held-out chosen replies; helpful-base chosen replies):
  exp(−Σ log p / Σ tokens) over all responses, token-weighted, under each model. A policy whose
  perplexity on good helpful replies rose has lost some of what the reference could do.
* KL(policy ‖ reference) per prompt, estimated on responses sampled from the policy at
  temperature 1 with no top-p cut (the policy's own distribution, or the estimate is biased):
  KL ≈ mean_i [log π(y_i|x_i) − log π_ref(y_i|x_i)], summed over each response's tokens, with
  its standard error. Responses stop at the end-of-turn token or at `max_new_tokens`, so it is
  the KL of the (possibly cut) response distributions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from prefalign.data.tokenize import TokenizedPair


def perplexity(logps: Tensor, counts: Tensor) -> float | None:
    """exp(−Σ logps / Σ counts): token-weighted perplexity of sequences whose summed log-probs
    are `logps` (N,) over `counts` (N,) tokens; None without tokens.
    Example: logps (−2, −4) over (1, 3) tokens: exp(6/4) = 4.48."""
    tokens = int(counts.sum())
    if tokens == 0:
        return None
    return math.exp(-float(logps.double().sum()) / tokens)


def perplexity_summary(reference: Tensor, policy: Tensor, counts: Tensor) -> dict:
    """{"reference", "policy", "n", "tokens"} for the same responses under both models."""
    return {"reference": perplexity(reference, counts), "policy": perplexity(policy, counts),
            "n": int(counts.numel()), "tokens": int(counts.sum())}


def kl_estimate(policy: Tensor, reference: Tensor, counts: Tensor) -> dict:
    """Monte-Carlo KL(policy ‖ reference) from summed log-probs of policy samples, each (N,).

    mean: the per-response estimate; stderr: its standard error (sample std / sqrt N);
    per_token: Σ(policy − reference) / Σ tokens. Example: differences (1, 3) over (2, 2)
    tokens: mean 2, stderr sqrt(2)/sqrt(2) = 1, per_token 1."""
    n = int(policy.numel())
    if n == 0:
        return {"mean": None, "stderr": None, "per_token": None, "n": 0}
    difference = policy.double() - reference.double()  # (N,)
    stderr = float(difference.std(unbiased=True)) / math.sqrt(n) if n > 1 else None
    tokens = int(counts.sum())
    return {"mean": float(difference.mean()), "stderr": stderr,
            "per_token": float(difference.sum()) / tokens if tokens else None, "n": n}


def response_pairs(
    prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]]
) -> list[TokenizedPair]:
    """Generated responses as pairs (the response on both sides), so the pair scorer scores
    them exactly as training scores responses. Empty responses are given as-is; callers drop
    them first."""
    return [
        TokenizedPair(f"sample:{i}", tuple(prompt), tuple(response), tuple(response))
        for i, (prompt, response) in enumerate(zip(prompt_ids, response_ids, strict=True))
    ]
