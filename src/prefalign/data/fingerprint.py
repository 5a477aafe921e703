"""A sha256 fingerprint of normalised preference pairs plus the options that shaped them.

Later stages (reference log-prob caches, run manifests) key on it. It depends on the pairs'
content and order (training order matters), never on file names or formats: the same pairs read
from JSONL or from a JSON array give the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

from prefalign.data.types import PreferencePair

FINGERPRINT_VERSION = "prefalign-pairs-v1"


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


class PairFingerprint:
    """The fingerprint built one pair at a time, for pairs that stream by."""

    def __init__(self, options: Mapping[str, object] | None = None) -> None:
        self._digest = hashlib.sha256()
        self._digest.update(_canonical({"version": FINGERPRINT_VERSION, "options": dict(options or {})}))

    def add(self, pair: PreferencePair) -> None:
        self.add_row(pair_row(pair))

    def add_row(self, row: bytes) -> None:
        """A pair given as its `pair_row` bytes."""
        self._digest.update(b"\n" + row)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def fingerprint_pairs(
    pairs: Iterable[PreferencePair], options: Mapping[str, object] | None = None
) -> str:
    """Hex sha256 over (version, options, every pair's prompt messages, chosen, rejected) in order."""
    fingerprint = PairFingerprint(options)
    for pair in pairs:
        fingerprint.add(pair)
    return fingerprint.hexdigest()


def pair_row(pair: PreferencePair) -> bytes:
    """The bytes a pair contributes to its fingerprint: canonical JSON of its content."""
    prompt = [[m.role, m.content] for m in pair.prompt]
    return _canonical([prompt, pair.chosen, pair.rejected])


def fingerprint_rows(rows: Iterable[bytes], options: Mapping[str, object] | None = None) -> str:
    """fingerprint_pairs from the pairs' `pair_row` bytes (stored rows need no decoding)."""
    fingerprint = PairFingerprint(options)
    for row in rows:
        fingerprint.add_row(row)
    return fingerprint.hexdigest()
