"""On-disk cache of precomputed reference log-probs: its key, its location, reading and writing.

A cache file is safetensors: four (N,) tensors, one entry per pair of a split in split order
(`chosen`, `rejected` float32 summed log-probs; `chosen_count`, `rejected_count` int64 response
token counts), with the JSON key in the metadata. The key names everything that determines the
numbers: the base weights (hash), dtype, tokenizer, chat template, the split's data fingerprint,
truncation settings, the starting adapter and, when reference forwards run under autocast
(`reference.precision: policy`), its dtype (a part left out otherwise, so float32 caches made
before it existed stay valid). Paths and file names are deliberately left out, so a moved model
or data file still hits the cache. The metadata also holds a sha256 of the four tensors: a file
whose numbers fail it (damaged in place) is never reused, but recomputed (`CachePlan.problem`
says why).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from prefalign.config import Config
from prefalign.data.tokenizer import cache_root, tokenizer_identity
from prefalign.engine.checked_tensors import read_checked, read_metadata, write_checked
from prefalign.engine.forward.precision import reference_autocast
from prefalign.integrity import Check, CorruptStateError
from prefalign.losses import PairLogps

if TYPE_CHECKING:
    from prefalign.engine.models.load import LoadedModel
    from prefalign.trainers.loop.method import Split as TokenizedSplit

KEY_VERSION = "prefalign-reference-logps-v1"  # bump when the meaning of the numbers changes
KEY_PARTS = ("version", "model", "dtype", "tokenizer", "chat_template", "data", "truncation",
             "adapter", "autocast")
_METADATA_FIELD = "prefalign_reference_key"
_TENSORS = ("chosen", "rejected", "chosen_count", "rejected_count")
_HEX = frozenset("0123456789abcdef")


class CacheMismatchError(ValueError):
    """An explicit reference cache made for another model, tokenizer, data or settings."""


@dataclass(frozen=True)
class CachePlan:
    """Where one split's reference log-probs live and whether that file can be reused as is;
    `problem`: why a file found there is not reused (damaged, unreadable, other settings)."""

    split: str
    key: dict[str, Any]
    path: Path
    explicit: bool
    reusable: bool
    problem: str | None = None

    @property
    def key_digest(self) -> str:
        return key_digest(self.key)


def reference_cache_key(config: Config, loaded: LoadedModel, split: TokenizedSplit) -> dict[str, Any]:
    """The parts (KEY_PARTS, and "autocast" when not off) that decide a split's reference
    log-probs."""
    identity = tokenizer_identity(loaded.tokenizer)
    chat_template = identity.pop("chat_template_sha256")
    identity.pop("name_or_path")  # a path: the same tokenizer elsewhere must still match
    data = config.data
    key = {
        "version": KEY_VERSION,
        "model": {"weight_hash": loaded.weight_hash},
        "dtype": config.model.dtype,
        "tokenizer": identity,
        "chat_template": chat_template,
        "data": split.fingerprint,
        "truncation": {"max_length": data.max_length, "max_prompt_length": data.max_prompt_length,
                       "on_overflow": data.on_overflow},
        "adapter": {"sha256": loaded.adapter_hash} if loaded.adapter is not None else None,
    }
    autocast = reference_autocast(config)
    if autocast != "off":
        key["autocast"] = autocast
    return key


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(key).encode("utf-8")).hexdigest()


def default_cache_path(key: dict[str, Any]) -> Path:
    """`cache_root()/reference-logps/<sha256(key)[:16]>.safetensors`."""
    return cache_root() / "reference-logps" / f"{key_digest(key)[:16]}.safetensors"


def plan_cache(config: Config, loaded: LoadedModel, split: TokenizedSplit) -> CachePlan:
    """Locate a split's cache; an explicit `reference.cache` file with another key is refused.

    A file with this key whose log-probs fail their checksum, and a default-location file
    with another key or none readable (a damaged file or a digest-prefix collision), are
    recomputed and replaced; the plan's `problem` says why.
    """
    key = reference_cache_key(config, loaded, split)
    explicit = config.reference.cache is not None
    if explicit:
        path = Path(config.reference.cache).expanduser() / f"{split.name}.safetensors"
    else:
        path = default_cache_path(key)
    found = read_cache_key(path)
    if explicit and found is not None and found != key:
        raise CacheMismatchError(mismatch_message(path, key, found))
    problem = None
    if found == key:
        problem = read_checked(path, _TENSORS, len(split.tokenized))[1]
    elif found is not None and "unreadable" in found:
        problem = f"unreadable ({found['unreadable']})"
    elif found is not None:
        problem = "it holds log-probs for other settings"
    return CachePlan(split.name, key, path, explicit, found == key and problem is None, problem)


def read_cache_key(path: Path) -> dict[str, Any] | None:
    """The key stored in a cache file: None when there is no file, {"unreadable": why} when
    it cannot be read."""
    if not path.is_file():
        return None
    try:
        text = read_metadata(path).get(_METADATA_FIELD)
        return json.loads(text) if text is not None else {}
    except Exception as error:  # safetensors raises its own error types for damaged headers
        return {"unreadable": f"{type(error).__name__}: {error}"}


def differing_parts(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """Names of the key parts whose values differ (every part when `found` is unreadable)."""
    return [part for part in KEY_PARTS if expected.get(part) != found.get(part)]


def mismatch_message(path: Path, expected: dict[str, Any], found: dict[str, Any]) -> str:
    """Names the differing parts with both values, and what to do about it."""
    advice = ("Point reference.cache at another directory, delete the file to recompute it, or "
              "leave reference.cache unset to use the default cache location")
    if "unreadable" in found:
        return f"{path}: not a readable reference cache ({found['unreadable']}). {advice}"
    parts = differing_parts(expected, found)
    details = "; ".join(
        f"{part}: cached {_short(found.get(part))}, this run {_short(expected.get(part))}"
        for part in parts
    )
    return (f"{path}: these reference log-probs were computed for a different "
            f"{', '.join(parts)} ({details}). {advice}")


def write_cache(path: Path, key: dict[str, Any], logps: PairLogps) -> None:
    """Write one split's log-probs atomically (a crash leaves no partial file)."""
    tensors = {
        "chosen": logps.chosen.detach().to("cpu", torch.float32).contiguous(),
        "rejected": logps.rejected.detach().to("cpu", torch.float32).contiguous(),
        "chosen_count": _counts(logps.chosen_count),
        "rejected_count": _counts(logps.rejected_count),
    }
    write_checked(path, tensors, {_METADATA_FIELD: _canonical(key)})


def read_cache(path: Path, key: dict[str, Any], size: int) -> PairLogps:
    """Read a cache file whose key must equal `key`, that must hold `size` pairs and whose
    log-probs must match their checksum (else CacheMismatchError / CorruptStateError)."""
    found = read_cache_key(path)
    if found != key:
        raise CacheMismatchError(mismatch_message(path, key, found or {}))
    tensors, problem = read_checked(path, _TENSORS, size)
    if tensors is None:
        raise CorruptStateError(f"{path}: {problem}; delete the file to recompute it")
    return PairLogps(**{name: tensors[name] for name in _TENSORS})


def verify_cache(path: Path, key_sha256: str | None = None) -> Check:
    """A cache file's verdict: readable, four equal-length tensors matching their checksum,
    and (given `key_sha256`, as a run manifest records it) made for that key."""
    found = read_cache_key(path)
    if found is None:
        return Check(path, True, "absent (computed again when needed)")
    if "unreadable" in found:
        return Check(path, False, f"unreadable ({found['unreadable']})")
    if key_sha256 is not None and key_digest(found) != key_sha256:
        return Check(path, False, "it holds log-probs for other settings than the run's")
    tensors, problem = read_checked(path, _TENSORS, None)
    if tensors is None:
        return Check(path, False, str(problem))
    return Check(path, True, f"{len(tensors['chosen'])} pairs match their sha256")


def _counts(counts: torch.Tensor | None) -> torch.Tensor:
    if counts is None:
        raise ValueError("reference log-probs to cache need token counts")
    return counts.detach().to("cpu", torch.int64).contiguous()


def _canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _short(value: object) -> str:
    """Compact JSON with sha256 hex digests cut to 12 characters, at most 120 characters."""
    text = _canonical(_abbreviate(value))
    return text if len(text) <= 120 else f"{text[:117]}..."


def _abbreviate(value: object) -> object:
    if isinstance(value, dict):
        return {key: _abbreviate(item) for key, item in value.items()}
    if isinstance(value, str) and len(value) == 64 and all(c in _HEX for c in value):
        return f"{value[:12]}..."
    return value
