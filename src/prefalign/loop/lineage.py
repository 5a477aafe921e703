"""Provenance of the loop's outputs: what generated the samples, which judges scored them, and
the lineage record `OUT.jsonl.lineage.json` written beside every output file.

The lineage record makes an output a dataset version: its own fingerprint (the one
`prefalign data validate` prints for it and training records), its parents (each input file's
sha256, and for a samples file the fingerprints its manifest records), the judges (ids, hashes,
weights), the settings, the counts, and the round of the generate → judge → train loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prefalign import __version__
from prefalign.atomic import write_json_atomic
from prefalign.engine.manifest import utc_now

LINEAGE_SUFFIX = ".lineage.json"
LINEAGE_VERSION = 1
_BLOCK = 1 << 20
# Where a samples manifest may keep each fact (`prefalign generate` writes the first names).
_GENERATOR_KEYS = {
    "model": ("model", "source", "model_source"),
    "weight_hash": ("weight_hash",),
    "chat_template": ("chat_template", "chat_template_sha256", "template"),
    "settings": ("settings", "decoding", "sampling"),
    "prompts_fingerprint": ("prompts_fingerprint", "prompt_fingerprint", "prompts_sha256"),
}


def lineage_path(output: str | Path) -> Path:
    path = Path(output)
    return path.with_name(path.name + LINEAGE_SUFFIX)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def generator_provenance(manifest: Mapping[str, Any] | None) -> dict[str, Any]:
    """Model, weight hash, chat template, decoding settings and prompt-set fingerprint as a
    samples manifest records them (looked up by name at any depth; None where it has none; a
    `prompts` object's `fingerprint` or `sha256` also counts as the prompt-set fingerprint)."""
    found = {name: _find(manifest or {}, keys) for name, keys in _GENERATOR_KEYS.items()}
    prompts = (manifest or {}).get("prompts")
    if found["prompts_fingerprint"] is None and isinstance(prompts, Mapping):
        found["prompts_fingerprint"] = prompts.get("fingerprint", prompts.get("sha256"))
    return found


def _find(value: Any, keys: Iterable[str]) -> Any:
    """The value of the first of `keys` found, breadth first, in nested mappings."""
    keys = tuple(keys)
    level = [value]
    while level:
        for mapping in level:
            for key in keys:
                if key in mapping:
                    return mapping[key]
        level = [v for mapping in level for v in mapping.values() if isinstance(v, Mapping)]
    return None


def file_parent(path: str | Path, role: str, manifest: Mapping[str, Any] | None = None) -> dict:
    """One parent of an output: the file's role, path and sha256 (and what its manifest says
    generated it, for a samples file)."""
    parent: dict[str, Any] = {"role": role, "path": str(path), "sha256": file_sha256(path)}
    if role == "samples":
        parent["manifest"] = dict(manifest) if manifest is not None else None
        parent["generator"] = generator_provenance(manifest)
    return parent


def lineage_record(*, kind: str, fingerprint: str, parents: list[dict], judges: dict,
                   settings: Mapping[str, Any], counts: Mapping[str, int], round_: int,
                   output: str | Path, scores: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The lineage record of `output` (kind: preference_pairs | sft_conversations); `scores`:
    the judges' mean scores, where the caller has them."""
    record = {
        "lineage_version": LINEAGE_VERSION,
        "kind": kind,
        "output": str(output),
        "fingerprint": fingerprint,
        "round": round_,
        "parents": parents,
        "judges": judges,
        "settings": dict(settings),
        "counts": dict(counts),
        "created_at": utc_now(),
        "prefalign": __version__,
    }
    if scores is not None:
        record["scores"] = dict(scores)
    return record


def write_lineage(output: str | Path, record: Mapping[str, Any]) -> Path:
    path = lineage_path(output)
    write_json_atomic(record, path)
    return path
