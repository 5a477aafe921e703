"""Probe a run: the log-probability of given responses to one prompt, before and after training.

The "before" is the reference the run started from (base weights plus any starting adapter), the
"after" the run's `final/` model. Responses are tokenised exactly as training tokenises pairs
(chat template, response up to and including the end-of-turn token), so the numbers are the
sequence log-probs the loss saw: log π(y|x) = Σ_t log π(y_t | x, y_<t), summed, not averaged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from prefalign.config import Config
from prefalign.data.tokenize import TokenizedPair, TruncationOptions, tokenize_pairs
from prefalign.data.tokenizer import load_tokenizer
from prefalign.data.types import Message, PreferencePair, Provenance
from prefalign.engine.models.runs import load_policy, load_reference, read_run

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase

@dataclass(frozen=True)
class TokenLogp:
    """One response token: its text and log-prob under the reference and the policy."""

    token: str
    reference: float
    policy: float

    @property
    def change(self) -> float:
        return self.policy - self.reference


@dataclass(frozen=True)
class ResponseProbe:
    """One response: summed log-probs over its `num_tokens` tokens under both models.
    `tokens` is empty unless per-token log-probs were asked for."""

    response: str
    num_tokens: int
    reference_logp: float
    policy_logp: float
    truncated: bool = False
    tokens: tuple[TokenLogp, ...] = ()

    @property
    def change(self) -> float:
        """log π(y|x) − log π_ref(y|x): the log of the probability ratio."""
        return self.policy_logp - self.reference_logp

    @property
    def reference_prob(self) -> float:
        return math.exp(self.reference_logp)

    @property
    def policy_prob(self) -> float:
        return math.exp(self.policy_logp)


@dataclass(frozen=True)
class ProbeResult:
    """The probed run, the prompt as messages, and one `ResponseProbe` per response, in order."""

    run_dir: str
    prompt: tuple[Message, ...]
    responses: tuple[ResponseProbe, ...]


def probe(
    run_dir: str | Path,
    prompt: str,
    responses: Sequence[str],
    *,
    system: str | None = None,
    per_token: bool = False,
) -> ProbeResult:
    """Score `responses` to `prompt` (with an optional system message) under the run's reference
    and its final policy. Raises FileNotFoundError when the run has no manifest or no final/."""
    if not responses:
        raise ValueError("probe: give at least one response")
    run = read_run(run_dir)
    messages = _prompt_messages(prompt, system)
    tokenizer = load_tokenizer(str(run.final_dir),
                               trust_remote_code=run.config.model.trust_remote_code)
    pairs = tokenize_responses(tokenizer, messages, responses, _truncation(run.config))
    # One model in memory at a time: the reference is scored and dropped before the policy loads.
    reference = load_reference(run)
    reference_logps = [response_token_logps(reference, pair) for pair in pairs]
    del reference
    policy = load_policy(run)
    policy_logps = [response_token_logps(policy, pair) for pair in pairs]
    del policy
    probes = tuple(
        _response_probe(text, pair, ref, pol, tokenizer if per_token else None)
        for text, pair, ref, pol in zip(responses, pairs, reference_logps, policy_logps,
                                        strict=True)
    )
    return ProbeResult(str(run.run_dir), messages, probes)


def tokenize_responses(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    responses: Sequence[str],
    options: TruncationOptions,
) -> list[TokenizedPair]:
    """Each response as a pair with itself as chosen and rejected: training's exact tokenising."""
    pairs = [
        PreferencePair(tuple(messages), text, text, Provenance("probe", i))
        for i, text in enumerate(responses)
    ]
    return tokenize_pairs(pairs, tokenizer, options).pairs


@torch.no_grad()
def response_token_logps(model: nn.Module, pair: TokenizedPair) -> torch.Tensor:
    """log π(y_t | x, y_<t) for each response token of `pair`, float32, shape (len(chosen_ids),)."""
    ids = torch.tensor([pair.input_ids("chosen")])  # (1, T)
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device)).logits[0, :-1].float()  # (T-1, V): t predicts t+1
    token_logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None].to(device))
    return token_logps[:, 0][len(pair.prompt_ids) - 1 :].cpu()  # the response's positions


def _prompt_messages(prompt: str, system: str | None) -> tuple[Message, ...]:
    user = Message("user", prompt)
    return (Message("system", system), user) if system is not None else (user,)


def _truncation(config: Config) -> TruncationOptions:
    # Truncate rather than drop or raise: a probe reports every response, flagging cut ones.
    data = config.data
    return TruncationOptions(data.max_length, data.max_prompt_length, "truncate")


def _response_probe(
    text: str,
    pair: TokenizedPair,
    reference: torch.Tensor,
    policy: torch.Tensor,
    tokenizer: PreTrainedTokenizerBase | None,
) -> ResponseProbe:
    """Sums of both models' token log-probs; per-token rows when a tokenizer is given."""
    tokens: tuple[TokenLogp, ...] = ()
    if tokenizer is not None:
        tokens = tuple(
            TokenLogp(tokenizer.decode([token_id]), float(ref), float(pol))
            for token_id, ref, pol in zip(pair.chosen_ids, reference, policy, strict=True)
        )
    return ResponseProbe(text, len(pair.chosen_ids), float(reference.sum()),
                         float(policy.sum()), pair.truncated, tokens)


def format_probe(result: ProbeResult, *, preview: int = 60) -> str:
    """A table of each response's log-prob and probability under reference and policy, the
    change, then per-token rows for responses that carry them."""
    lines = [f"run: {result.run_dir}"]
    lines += [f"{m.role}: {_short(m.content, 200)}" for m in result.prompt]
    lines.append("")
    lines.append(f"{'#':>2}  {'tokens':>6}  {'ref logp':>10}  {'policy logp':>11}  {'change':>9}  "
                 f"{'ref prob':>9}  {'policy prob':>11}  response")
    for i, item in enumerate(result.responses, 1):
        cut = " (truncated)" if item.truncated else ""
        lines.append(
            f"{i:>2}  {item.num_tokens:>6}  {item.reference_logp:>10.4f}  "
            f"{item.policy_logp:>11.4f}  {item.change:>+9.4f}  {item.reference_prob:>9.3e}  "
            f"{item.policy_prob:>11.3e}  {_short(item.response, preview)!r}{cut}"
        )
    for i, item in enumerate(result.responses, 1):
        if item.tokens:
            lines += ["", f"response {i}, per token:", _token_table(item.tokens)]
    return "\n".join(lines)


def _token_table(tokens: Sequence[TokenLogp]) -> str:
    rows = [f"  {'token':<16}  {'ref':>9}  {'policy':>9}  {'diff':>9}"]
    rows += [
        f"  {_short(t.token, 16)!r:<16}  {t.reference:>9.4f}  {t.policy:>9.4f}  {t.change:>+9.4f}"
        for t in tokens
    ]
    return "\n".join(rows)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
