"""The KV cache of a decoding batch: transformers' DynamicCache with full-attention layers that
write each new position in place, and the row operations a decoding batch needs.

DynamicCache appends a step's keys and values with torch.cat, which copies the whole cache
every step (a quarter of a SmolLM2-135M decode step at 64 rows × 100 positions on 2 CPU cores).
`PreallocatedLayer` keeps them in buffers with room for `reserve` more positions and returns
views. Rows are left-aligned as in transformers' left-padded generation: every row ends at the
same position, padding (masked, zero-filled) sits on the left.

Models whose cache has other kinds of layers (sliding windows, linear attention) keep
transformers' own layers; their batches can drop rows but not take in new ones (`mergeable`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import DynamicCache, PretrainedConfig
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One full-attention layer: keys and values (B, H, capacity, D), the first `length`
    positions in use; `keys` / `values` are views of those positions."""

    def __init__(self, reserve: int) -> None:
        super().__init__()
        self.reserve = reserve  # free positions to allocate beyond what is in use
        self.length = 0
        self._keys: Tensor | None = None
        self._values: Tensor | None = None

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs
               ) -> tuple[Tensor, Tensor]:
        new = key_states.shape[-2]
        if self._keys is None or self.length + new > self._keys.shape[-2]:
            self._reallocate(key_states, self.length + new)
        assert self._keys is not None and self._values is not None
        self._keys[:, :, self.length : self.length + new] = key_states
        self._values[:, :, self.length : self.length + new] = value_states
        self.length += new
        self._set_views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Each row `repeats` times in a row (one prompt's prefill serving its samples)."""
        if self._keys is None:
            return
        self._keys, self._values = (
            _copy_rows(view.repeat_interleave(repeats, dim=0), self.reserve)
            for view in (self.keys, self.values))
        self._set_views()

    def select_rows(self, indices: Tensor, drop_left: int = 0) -> None:
        """Keep the rows `indices`, without their first `drop_left` positions (padding)."""
        if self._keys is None:
            return
        self._keys, self._values = (
            _copy_rows(view[indices, :, drop_left:], self.reserve)
            for view in (self.keys, self.values))
        self.length -= drop_left
        self._set_views()

    def append_rows(self, other: PreallocatedLayer) -> None:
        """Put `other`'s rows after these, padding the shorter side on the left with zeros."""
        if self._keys is None or other._keys is None:
            raise ValueError("append_rows: both layers must hold positions")
        length = max(self.length, other.length)
        merged = []
        for mine, theirs in ((self.keys, other.keys), (self.values, other.values)):
            rows = mine.shape[0] + theirs.shape[0]
            buffer = mine.new_zeros((rows, mine.shape[1], length + self.reserve, mine.shape[3]))
            buffer[: mine.shape[0], :, length - mine.shape[2] : length] = mine
            buffer[mine.shape[0] :, :, length - theirs.shape[2] : length] = theirs
            merged.append(buffer)
        self._keys, self._values = merged
        self.length = length
        self._set_views()

    def start_from(self, prefix: PreallocatedLayer, rows: int, room: int) -> None:
        """Hold `rows` copies of `prefix`'s one row, with `room` free positions after it."""
        length = prefix.length
        for name in ("_keys", "_values"):
            view = getattr(prefix, name)[:, :, :length]  # (1, H, length, D)
            buffer = view.new_empty((rows, view.shape[1], length + room, view.shape[3]))
            buffer[:, :, :length] = view
            setattr(self, name, buffer)
        self.length = length
        self.device, self.is_initialized = prefix.device, True
        self._set_views()

    def _reallocate(self, like: Tensor, needed: int) -> None:
        capacity = needed + self.reserve
        shape = (like.shape[0], like.shape[1], capacity, like.shape[3])
        keys, values = like.new_empty(shape), like.new_empty(shape)
        if self._keys is not None and self._values is not None:
            keys[:, :, : self.length] = self.keys
            values[:, :, : self.length] = self.values
        self._keys, self._values = keys, values
        self.device, self.is_initialized = like.device, True

    def _set_views(self) -> None:
        assert self._keys is not None and self._values is not None
        self.keys = self._keys[:, :, : self.length]
        self.values = self._values[:, :, : self.length]


def _copy_rows(view: Tensor, reserve: int) -> Tensor:
    """`view` (B, H, T, D) copied into a new buffer with `reserve` free positions after T."""
    buffer = view.new_empty((view.shape[0], view.shape[1], view.shape[2] + reserve,
                             view.shape[3]))
    buffer[:, :, : view.shape[2]] = view
    return buffer


class DecodeCache(DynamicCache):
    """A DynamicCache for one decoding batch; see the module docstring."""

    def __init__(self, config: PretrainedConfig, reserve: int) -> None:
        super().__init__(config=config)
        self.mergeable = bool(self.layers) and all(type(layer) is DynamicLayer
                                                   for layer in self.layers)
        if self.mergeable:
            self.layers = [PreallocatedLayer(reserve) for _ in self.layers]

    def select_rows(self, indices: Tensor, drop_left: int = 0) -> None:
        """Keep the rows `indices` (and drop `drop_left` leading positions when mergeable)."""
        if not self.mergeable:
            self.batch_select_indices(indices)
            return
        for layer in self.layers:
            layer.select_rows(indices, drop_left)

    def start_from(self, prefix: DecodeCache, rows: int, room: int) -> None:
        """Begin as `rows` copies of the one-row cache `prefix` (both mergeable), with room for
        `room` more positions before the buffers grow."""
        for mine, theirs in zip(self.layers, prefix.layers, strict=True):
            mine.start_from(theirs, rows, room)

    def append_rows(self, other: DecodeCache) -> None:
        """Add `other`'s rows after these (both must be mergeable)."""
        if not (self.mergeable and other.mergeable):
            raise ValueError("append_rows: this model's cache layers cannot be merged")
        for mine, theirs in zip(self.layers, other.layers, strict=True):
            mine.append_rows(theirs)


def left_pad(mask: Tensor, length: int) -> Tensor:
    """A (B, T) attention mask padded on the left with zeros to (B, length)."""
    return torch.nn.functional.pad(mask, (length - mask.shape[1], 0))
