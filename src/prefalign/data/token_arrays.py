"""Tokenised pairs and their source pairs as flat NumPy arrays, read back as lazy sequences.

A store is five `.npy` files in one directory (NumPy's own format, loaded with
`allow_pickle=False` and memory-mapped):
  tokens (T,) int32        every pair's prompt, chosen and rejected ids, one after another
  token_bounds (3N+1,)     int64: pair i's prompt is tokens[b[3i]:b[3i+1]], chosen up to
                           b[3i+2], rejected up to b[3i+3]
  flags (N, 3) bool        prompt, chosen, rejected truncated
  text (S,) uint8          per pair, UTF-8: its id, its fingerprint row (`pair_row`: canonical
                           JSON of prompt, chosen, rejected) and its provenance as JSON
  text_bounds (3N+1,)      int64, as token_bounds for those three strings
`TokenizedPairs` and `CachedPairs` index such a store: a TokenizedPair or PreferencePair is
built only when one is asked for, so 100k pairs cost their pages, not 100k Python objects.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from prefalign.data.fingerprint import pair_row
from prefalign.data.tokenize import TokenizedPair
from prefalign.data.types import Message, PreferencePair, Provenance

ARRAY_FILES = ("tokens", "token_bounds", "flags", "text", "text_bounds")
T = TypeVar("T")


class StoreError(ValueError):
    """A store whose arrays are missing or do not fit together."""


def write_store(
    directory: Path, pairs: Sequence[PreferencePair], tokenized: Sequence[TokenizedPair]
) -> None:
    """Write the five arrays for `pairs[i]` encoded as `tokenized[i]` into `directory`."""
    if len(pairs) != len(tokenized):
        raise ValueError(f"{len(pairs)} pairs but {len(tokenized)} tokenised pairs")
    pieces = [(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in tokenized]
    parts = list(itertools.chain.from_iterable(pieces))
    _save(directory / "tokens.npy", np.fromiter(
        itertools.chain.from_iterable(parts), dtype=np.int32, count=sum(map(len, parts))))
    _save(directory / "token_bounds.npy", _bounds(len(part) for part in parts))
    flags = [(p.prompt_truncated, p.chosen_truncated, p.rejected_truncated) for p in tokenized]
    _save(directory / "flags.npy", np.array(flags, dtype=np.bool_).reshape(len(tokenized), 3))
    strings = [s for pair, tokens in zip(pairs, tokenized, strict=True)
               for s in (tokens.pair_id.encode("utf-8"), pair_row(pair), _provenance_json(pair))]
    _save(directory / "text.npy", np.frombuffer(b"".join(strings), dtype=np.uint8))
    _save(directory / "text_bounds.npy", _bounds(len(s) for s in strings))


def _bounds(lengths: Iterator[int] | Any) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(np.fromiter(lengths, dtype=np.int64)))).astype(np.int64)


def _save(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as handle:
        np.save(handle, array, allow_pickle=False)


def _provenance_json(pair: PreferencePair) -> bytes:
    p = pair.provenance
    fields = [p.source, p.line, p.record_id, p.turn, [list(item) for item in p.metadata]]
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class Store:
    """The memory-mapped arrays of one directory, checked to fit together."""

    def __init__(self, directory: Path, count: int):
        # Plain ndarray views of the maps: slicing a np.memmap costs ~10x more per call.
        arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                  .view(np.ndarray) for name in ARRAY_FILES}
        self.tokens, self.token_bounds = arrays["tokens"], arrays["token_bounds"]
        self.flags, self.text, self.text_bounds = arrays["flags"], arrays["text"], arrays["text_bounds"]
        self.count = count
        self._check()

    def _check(self) -> None:
        expected = {"token_bounds": (3 * self.count + 1,), "flags": (self.count, 3),
                    "text_bounds": (3 * self.count + 1,)}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise StoreError(f"{name}: shape {getattr(self, name).shape}, expected {shape}")
        for bounds, data in ((self.token_bounds, self.tokens), (self.text_bounds, self.text)):
            if bounds[0] != 0 or bounds[-1] != len(data) or np.any(np.diff(bounds) < 0):
                raise StoreError(f"bounds do not cover their {len(data)} values")

    def length_signs(self, rows: np.ndarray) -> list[int]:
        """Per row, the sign of (chosen - rejected) response tokens (`length_sign`)."""
        starts = 3 * rows
        chosen = self.token_bounds[starts + 2] - self.token_bounds[starts + 1]
        rejected = self.token_bounds[starts + 3] - self.token_bounds[starts + 2]
        return np.sign(chosen - rejected).tolist()

    def string(self, row: int, part: int) -> bytes:
        """Part 0 (pair id), 1 (fingerprint row) or 2 (provenance) of a stored pair."""
        start, end = self.text_bounds[3 * row + part : 3 * row + part + 2].tolist()
        return self.text[start:end].tobytes()

    def tokenized(self, row: int) -> TokenizedPair:
        b0, b1, b2, b3 = self.token_bounds[3 * row : 3 * row + 4].tolist()
        ids = self.tokens[b0:b3].tolist()
        prompt, chosen, rejected = ids[: b1 - b0], ids[b1 - b0 : b2 - b0], ids[b2 - b0 :]
        flags = self.flags[row].tolist()
        return TokenizedPair(self.string(row, 0).decode("utf-8"), tuple(prompt), tuple(chosen),
                             tuple(rejected), *flags)

    def pair(self, row: int) -> PreferencePair:
        prompt, chosen, rejected = json.loads(self.string(row, 1))
        source, line, record_id, turn, metadata = json.loads(self.string(row, 2))
        provenance = Provenance(source, line, record_id, turn, tuple(map(tuple, metadata)))
        return PreferencePair(tuple(Message(role, content) for role, content in prompt),
                              chosen, rejected, provenance)


class _LazyRows(Sequence[T]):
    """Rows of a Store in a given order; behaves like a read-only list of decoded items."""

    def __init__(self, store: Store, rows: np.ndarray | None = None):
        self._store = store
        self._rows = np.arange(store.count, dtype=np.int64) if rows is None else rows

    def _decode(self, row: int) -> T:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return type(self)(self._store, self._rows[index])
        return self._decode(int(self._rows[index]))

    def __iter__(self) -> Iterator[T]:
        for row in self._rows.tolist():
            yield self._decode(row)

    def take(self, positions: Sequence[int]) -> Any:
        """A view of these positions, in this order (like `[self[i] for i in positions]`)."""
        return type(self)(self._store, self._rows[np.asarray(positions, dtype=np.int64)])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, like list

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} rows)"


class TokenizedPairs(_LazyRows[TokenizedPair]):
    """TokenizedPair objects built from the store on access."""

    def _decode(self, row: int) -> TokenizedPair:
        return self._store.tokenized(row)


    def length_signs(self) -> list[int]:
        """[length_sign(pair) for pair in self], from the stored bounds alone."""
        return self._store.length_signs(self._rows)


class CachedPairs(_LazyRows[PreferencePair]):
    """PreferencePair objects (provenance included) built from the store on access."""

    def _decode(self, row: int) -> PreferencePair:
        return self._store.pair(row)

    def fingerprint_rows(self) -> Iterator[bytes]:
        """`pair_row` of each pair, read as stored (no decoding)."""
        for row in self._rows.tolist():
            yield self._store.string(row, 1)


def open_store(directory: Path, count: int) -> tuple[CachedPairs, TokenizedPairs]:
    """The pairs and their tokens of a store of `count` pairs; StoreError when they do not fit."""
    store = Store(directory, count)
    return CachedPairs(store), TokenizedPairs(store)


def take(items: Sequence[T], positions: Sequence[int]) -> Sequence[T]:
    """`items` at `positions`, in that order: a view for lazy rows, else a list."""
    if isinstance(items, _LazyRows):
        return items.take(positions)
    return [items[i] for i in positions]
