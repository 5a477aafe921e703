"""Held-out preference pairs under the reference and the policy: load, score, summarise.

Every pair is scored by both models exactly as training scores it (same chat template,
truncation and summed response log-probs, prompt computed once per pair). The run's loss turns
the log-probs into implicit rewards, so "accuracy" is the reward accuracy training reported.
Summaries reuse `prefalign.engine.metrics.eval_metrics`: accuracy always comes with the
length-only baseline, the length-balanced accuracy and the reward/length correlation.

Slices: `source` is the data source a pair came from (as given on the command line);
`category` is the pair's own `category` metadata when its format carries one, else
"single-turn" or "multi-turn" by the number of user turns in the prompt.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from prefalign.data.bundled import resolve_data_path
from prefalign.data.load import LoadOptions, load_pairs
from prefalign.data.tokenize import TokenizedPair, TruncationOptions, tokenize_pairs
from prefalign.data.types import PreferencePair
from prefalign.engine.forward.gather import logps_to_cpu, scatter_logps
from prefalign.engine.forward.packed import score_tokenized_pairs
from prefalign.engine.metrics import PairRecords, eval_metrics, reward_correct
from prefalign.losses import ConfiguredLoss, PairLogps

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase

WORST = 10  # wrong pairs listed in the report


@dataclass(frozen=True)
class PairSet:
    """Pairs of one or more sources, tokenised; `sources[i]` names where pair i came from."""

    pairs: list[PreferencePair]
    tokenized: list[TokenizedPair]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.tokenized)


@dataclass(frozen=True)
class ScoredPairs:
    """A PairSet with both models' summed response log-probs, each (N,)."""

    data: PairSet
    reference: PairLogps
    policy: PairLogps


def load_pair_set(
    sources: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    truncation: TruncationOptions,
    *,
    max_pairs: int | None,
    seed: int,
) -> PairSet:
    """Load and tokenise every source, then keep a seeded sample of `max_pairs` (file order
    kept; all pairs when there are fewer). Invalid records raise DataError naming file and line."""
    pairs: list[PreferencePair] = []
    names: list[str] = []
    for source in sources:
        loaded = load_pairs([resolve_data_path(source)], LoadOptions())
        pairs += loaded.pairs
        names += [source] * len(loaded.pairs)
    keep = _sample(len(pairs), max_pairs, seed)
    return tokenize_pair_set([pairs[i] for i in keep], [names[i] for i in keep], tokenizer,
                             truncation)


def tokenize_pair_set(
    pairs: Sequence[PreferencePair],
    sources: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    truncation: TruncationOptions,
) -> PairSet:
    """`pairs` tokenised with `tokenizer`'s chat template; pairs dropped as over-length (only
    under on_overflow="drop") leave the set together with their source."""
    result = tokenize_pairs(pairs, tokenizer, truncation)
    if len(result.pairs) == len(pairs):
        return PairSet(list(pairs), result.pairs, list(sources))
    kept_ids = {pair.pair_id for pair in result.pairs}
    kept = [i for i, pair in enumerate(pairs) if pair.provenance.pair_id in kept_ids]
    return PairSet([pairs[i] for i in kept], result.pairs, [sources[i] for i in kept])


def _sample(total: int, limit: int | None, seed: int) -> list[int]:
    if limit is None or limit >= total:
        return list(range(total))
    return sorted(random.Random(seed).sample(range(total), limit))


@torch.no_grad()
def score_pair_set(
    model: nn.Module, data: PairSet, *, batch_size: int = 8, desc: str | None = None
) -> PairLogps:
    """Summed response log-probs of every pair under `model`, in `data` order. Batches are
    formed shortest first so that packed rows stay small; results are put back in order."""
    lengths = torch.tensor([_length(pair) for pair in data.tokenized])
    order = torch.argsort(lengths, stable=True)
    parts: list[tuple[torch.Tensor, PairLogps]] = []
    with tqdm(total=len(data), desc=desc, unit="pair", disable=desc is None) as bar:
        for indices in order.split(batch_size):
            batch = [data.tokenized[i] for i in indices.tolist()]
            logps = score_tokenized_pairs(model, batch)
            parts.append((indices, logps_to_cpu(logps)))
            bar.update(len(batch))
    return scatter_logps(parts, len(data))


def _length(pair: TokenizedPair) -> int:
    return len(pair.prompt_ids) + len(pair.chosen_ids) + len(pair.rejected_ids)


def records(scored: ScoredPairs, loss: ConfiguredLoss) -> PairRecords:
    """The run's loss applied to both models' log-probs: rewards and losses per pair."""
    reference = scored.reference if loss.spec.needs_reference else None
    output = loss(scored.policy, reference)
    return PairRecords(
        losses=output.losses.detach(), chosen_rewards=output.chosen_rewards.detach(),
        rejected_rewards=output.rejected_rewards.detach(),
        policy_chosen=scored.policy.chosen, policy_rejected=scored.policy.rejected,
        reference_chosen=scored.reference.chosen, reference_rejected=scored.reference.rejected,
        chosen_tokens=scored.policy.chosen_count, rejected_tokens=scored.policy.rejected_count,
    )


def category_of(pair: PreferencePair) -> str:
    """The pair's `category` metadata, else single-turn / multi-turn by its user turns."""
    category = pair.provenance.meta("category")
    if category:
        return category
    users = sum(message.role == "user" for message in pair.prompt)
    return "single-turn" if users == 1 else "multi-turn"


def summarise(scored: ScoredPairs, loss: ConfiguredLoss) -> dict:
    """The `heldout` section of eval.json (without template robustness)."""
    rec = records(scored, loss)
    columns = per_pair_columns(scored, rec)
    return {
        "overall": {"n": len(scored.data), **eval_metrics(rec)},
        "slices": {
            "source": _slices(rec, scored.data.sources),
            "category": _slices(rec, [category_of(p) for p in scored.data.pairs]),
        },
        "worst_pairs": worst_pairs(scored, columns),
        "per_pair": columns,
    }


def _slices(rec: PairRecords, keys: Sequence[str]) -> dict[str, dict]:
    slices = {}
    for key in sorted(set(keys)):
        mask = torch.tensor([k == key for k in keys])
        part = PairRecords(**{name: None if value is None else value[mask]
                              for name, value in vars(rec).items()})
        slices[key] = {"n": int(mask.sum()), **eval_metrics(part)}
    return slices


def per_pair_columns(scored: ScoredPairs, rec: PairRecords) -> dict[str, list]:
    """One list per column, one entry per pair, in `scored` order (also pairs.csv)."""
    data = scored.data
    return {
        "pair_id": [pair.provenance.pair_id for pair in data.pairs],
        "source": list(data.sources),
        "category": [category_of(pair) for pair in data.pairs],
        "reference_chosen": rec.reference_chosen.tolist(),
        "reference_rejected": rec.reference_rejected.tolist(),
        "policy_chosen": rec.policy_chosen.tolist(),
        "policy_rejected": rec.policy_rejected.tolist(),
        "chosen_change": (rec.policy_chosen - rec.reference_chosen).tolist(),
        "rejected_change": (rec.policy_rejected - rec.reference_rejected).tolist(),
        "reward_margin": (rec.chosen_rewards - rec.rejected_rewards).tolist(),
        "chosen_tokens": rec.chosen_tokens.tolist(),
        "rejected_tokens": rec.rejected_tokens.tolist(),
        "correct": reward_correct(rec.chosen_rewards, rec.rejected_rewards).tolist(),
    }


def worst_pairs(scored: ScoredPairs, columns: dict[str, list], limit: int = WORST) -> list[dict]:
    """The wrongly ranked pairs with the most negative reward margins, worst first."""
    margins = columns["reward_margin"]
    wrong = [i for i, ok in enumerate(columns["correct"]) if not ok]
    wrong.sort(key=lambda i: margins[i])
    rows = []
    for i in wrong[:limit]:
        pair = scored.data.pairs[i]
        rows.append({
            "pair_id": columns["pair_id"][i], "source": columns["source"][i],
            "prompt": _last_user_turn(pair), "chosen": pair.chosen, "rejected": pair.rejected,
            "margin": margins[i],
            "policy_margin_logp": columns["policy_chosen"][i] - columns["policy_rejected"][i],
            "reference_margin_logp": (columns["reference_chosen"][i]
                                      - columns["reference_rejected"][i]),
        })
    return rows


def _last_user_turn(pair: PreferencePair) -> str:
    users = [message.content for message in pair.prompt if message.role == "user"]
    return users[-1] if users else ""
