"""Where each token of a prefix-shared, packed batch sits, what it may see, and what it predicts.

Each pair becomes one segment `prefix | chosen tail | rejected tail`, where the prefix is the
longest run of token ids that chosen and rejected share from the start (the prompt, at least).
Segments are packed into rows; a row holds several pairs' segments back to back, no padding
inside. Position ids restart at 0 in every segment and the rejected tail's continue from the end
of the prefix, as if the chosen tail were absent, so every token sees exactly the tokens and
positions it would see in its own unshared sequence: chosen tokens see the prefix and earlier
chosen tokens, rejected tokens the prefix and earlier rejected tokens, never chosen ones.

Scored tokens: a side's token at position j (label ≠ -100, j ≥ 1) is predicted by the hidden
state of that side's token j − 1. The layout records that as an explicit (target -> source row)
index because the rows are not a plain shift: the first rejected-tail token is predicted from the
last prefix token, which sits before the chosen tail, not right before it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from prefalign.data.tokenize import IGNORE_INDEX, TokenizedPair

PREFIX, CHOSEN, REJECTED, PADDING = 0, 1, 2, 3  # which part of its segment a token belongs to


@dataclass(frozen=True)
class PairTokens:
    """One pair's full chosen and rejected sequences (prompt + response) and their labels.

    Labels are the ids where a token is scored and IGNORE_INDEX (-100) where it is not, as in
    `collate_pairs` without the padding.
    """

    chosen_ids: tuple[int, ...]
    chosen_labels: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    rejected_labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.chosen_ids) != len(self.chosen_labels):
            raise ValueError("PairTokens: chosen_ids and chosen_labels differ in length")
        if len(self.rejected_ids) != len(self.rejected_labels):
            raise ValueError("PairTokens: rejected_ids and rejected_labels differ in length")

    @classmethod
    def from_tokenized(cls, pair: TokenizedPair) -> PairTokens:
        return cls(
            pair.input_ids("chosen"), pair.labels("chosen"),
            pair.input_ids("rejected"), pair.labels("rejected"),
        )  # fmt: skip

    @functools.cached_property
    def prefix_length(self) -> int:
        """Tokens shared from the start: computed once, seen by both sides."""
        shared = 0
        for chosen, rejected in zip(self.chosen_ids, self.rejected_ids, strict=False):
            if chosen != rejected:
                break
            shared += 1
        return shared

    @property
    def segment_length(self) -> int:
        return len(self.chosen_ids) + len(self.rejected_ids) - self.prefix_length


def pair_tokens_from_batch(batch: Mapping[str, Tensor]) -> list[PairTokens]:
    """Un-pad a `collate_pairs` batch ({chosen,rejected}_{input_ids,attention_mask,labels}, (B, T)).

    Positions where the attention mask is 0 are dropped, so left or right padding both work.
    """
    sides = []
    for side in ("chosen", "rejected"):
        keep = batch[f"{side}_attention_mask"].bool().cpu()  # (B, T)
        ids, labels = batch[f"{side}_input_ids"].cpu(), batch[f"{side}_labels"].cpu()  # (B, T)
        rows = zip(ids, labels, keep, strict=True)
        sides.append([(tuple(i[k].tolist()), tuple(lab[k].tolist())) for i, lab, k in rows])
    return [PairTokens(*chosen, *rejected) for chosen, rejected in zip(*sides, strict=True)]


@dataclass(frozen=True)
class PackedLayout:
    """A packed batch of B pairs in R rows of L tokens, and the scored targets of its 2B sequences.

    Sequence k < B is pair k's chosen side, B + k its rejected side. Tensors are on `device`.
    """

    input_ids: Tensor  # (R, L)
    position_ids: Tensor  # (R, L)
    segment: Tensor  # (R, L) segment (pair) index within the row; -1 on row-end padding
    part: Tensor  # (R, L) PREFIX, CHOSEN, REJECTED or PADDING
    source_index: Tensor  # (N,) flat index (row * L + column) of each target's predicting state
    target_ids: Tensor  # (N,) the predicted token ids
    sequence_index: Tensor  # (N,) which of the 2B sequences each target belongs to
    counts: Tensor  # (2B,) scored tokens per sequence, int64
    longest: int  # tokens in the longest of the 2B sequences (the largest position id + 1)

    @property
    def num_pairs(self) -> int:
        return self.counts.shape[0] // 2

    def attention_mask(self) -> Tensor:
        """(R, 1, L, L) bool, True where query token q may attend to key token k.

        Within a segment: causal in row order, except that rejected tokens skip chosen ones.
        Padding tokens see only themselves, so no softmax row is empty (no NaN); nothing real sees
        them, and their hidden states are never scored.
        """
        length = self.input_ids.shape[1]
        columns = torch.arange(length, device=self.input_ids.device)
        causal = columns[None, :] <= columns[:, None]  # (L, L) [q, k]
        same_segment = self.segment[:, :, None] == self.segment[:, None, :]  # (R, L, L)
        rejected_query = self.part[:, :, None] == REJECTED  # (R, L, 1)
        crosses = rejected_query & (self.part[:, None, :] == CHOSEN)  # (R, L, L)
        is_padding = self.part[:, :, None] == PADDING  # (R, L, 1) padding queries
        visible = same_segment & causal & ~crosses & ~is_padding  # (R, L, L)
        visible |= (columns[None, :] == columns[:, None]) & is_padding  # padding sees itself
        return visible[:, None]  # (R, 1, L, L)


def build_layout(
    pairs: Sequence[PairTokens],
    *,
    max_row_tokens: int | None = None,
    pad_token_id: int = 0,
    device: torch.device | str | None = None,
) -> PackedLayout:
    """Pack `pairs` (in order) into rows of at most `max_row_tokens` tokens each.

    None puts every pair in one row. A pair longer than the budget gets a row of its own; with
    more than one row, rows are right-padded to the longest. `max_row_tokens=1` gives one pair
    per row (prefix sharing without packing).
    """
    if not pairs:
        raise ValueError("build_layout: no pairs")
    if max_row_tokens is not None and max_row_tokens < 1:
        raise ValueError(f"max_row_tokens must be None or >= 1, got {max_row_tokens!r}")
    rows = _assign_rows(pairs, max_row_tokens)
    width = max(1, *(sum(pairs[i].segment_length for i in row) for row in rows))
    builder = _LayoutBuilder(num_pairs=len(pairs), width=width, pad_token_id=pad_token_id)
    for row_number, row in enumerate(rows):
        offset = row_number * width
        for segment, pair_number in enumerate(row):
            offset = builder.add_segment(pairs[pair_number], pair_number, segment, offset)
        builder.pad_row_to((row_number + 1) * width)
    return builder.finish(len(rows), device)


def _assign_rows(pairs: Sequence[PairTokens], max_row_tokens: int | None) -> list[list[int]]:
    """Greedy in order: a pair joins the current row if the row stays within the budget."""
    rows: list[list[int]] = [[]]
    used = 0
    for number, pair in enumerate(pairs):
        size = pair.segment_length
        if rows[-1] and max_row_tokens is not None and used + size > max_row_tokens:
            rows.append([])
            used = 0
        rows[-1].append(number)
        used += size
    return rows


class _LayoutBuilder:
    """Accumulates flat per-token and per-target lists; `finish` turns them into tensors."""

    def __init__(self, num_pairs: int, width: int, pad_token_id: int):
        self.num_pairs, self.width, self.pad_token_id = num_pairs, width, pad_token_id
        self.input_ids: list[int] = []
        self.position_ids: list[int] = []
        self.segment: list[int] = []
        self.part: list[int] = []
        self.source_index: list[int] = []
        self.target_ids: list[int] = []
        self.sequence_index: list[int] = []
        self.counts = [0] * (2 * num_pairs)
        self.longest = 0

    def add_segment(self, pair: PairTokens, pair_number: int, segment: int, offset: int) -> int:
        """Append `prefix | chosen tail | rejected tail` at flat index `offset`; return the end."""
        shared = pair.prefix_length
        chosen_tail = len(pair.chosen_ids) - shared
        self.longest = max(self.longest, len(pair.chosen_ids), len(pair.rejected_ids))
        parts = (
            (pair.chosen_ids[:shared], range(shared), PREFIX),
            (pair.chosen_ids[shared:], range(shared, len(pair.chosen_ids)), CHOSEN),
            (pair.rejected_ids[shared:], range(shared, len(pair.rejected_ids)), REJECTED),
        )
        for ids, positions, part in parts:
            self.input_ids.extend(ids)
            self.position_ids.extend(positions)
            self.segment.extend([segment] * len(ids))
            self.part.extend([part] * len(ids))
        self._add_targets(pair.chosen_labels, pair_number, lambda j: offset + j)
        self._add_targets(
            pair.rejected_labels,
            self.num_pairs + pair_number,
            lambda j: offset + j + (chosen_tail if j >= shared else 0),
        )
        return offset + pair.segment_length

    def _add_targets(self, labels: Sequence[int], sequence: int, flat_index_of) -> None:
        # the side's token j is predicted by the hidden state of its token j - 1 (none for j = 0)
        for j in range(1, len(labels)):
            if labels[j] != IGNORE_INDEX:
                self.source_index.append(flat_index_of(j - 1))
                self.target_ids.append(labels[j])
                self.sequence_index.append(sequence)
                self.counts[sequence] += 1

    def pad_row_to(self, end: int) -> None:
        missing = end - len(self.input_ids)
        self.input_ids.extend([self.pad_token_id] * missing)
        self.position_ids.extend([0] * missing)
        self.segment.extend([-1] * missing)
        self.part.extend([PADDING] * missing)

    def finish(self, num_rows: int, device: torch.device | str | None) -> PackedLayout:
        def as_tensor(values: list[int], shape: tuple[int, ...] | None = None) -> Tensor:
            tensor = torch.tensor(values, dtype=torch.long)
            return (tensor.view(shape) if shape else tensor).to(device)

        grid = (num_rows, self.width)
        return PackedLayout(
            input_ids=as_tensor(self.input_ids, grid),
            position_ids=as_tensor(self.position_ids, grid),
            segment=as_tensor(self.segment, grid),
            part=as_tensor(self.part, grid),
            source_index=as_tensor(self.source_index),
            target_ids=as_tensor(self.target_ids),
            sequence_index=as_tensor(self.sequence_index),
            counts=as_tensor(self.counts),
            longest=self.longest,
        )
