"""GRPO's prompt splits: a prompt file read and tokenised once, in file order.

Positions in `PromptSplit.rows` are what batches and checkpoints refer to; the loop shuffles
them per epoch with the run seed. The fingerprint covers the file's bytes and the tokenizer and
template that turned each prompt into the token ids the sampler starts from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prefalign.config import ConfigError
from prefalign.data.bundled import resolve_data_path
from prefalign.data.template import batch_token_ids, render_prompt
from prefalign.data.tokenizer import tokenizer_identity
from prefalign.engine.sampling.prompts import PromptRow, file_sha256, read_prompt_file

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

FINGERPRINT_VERSION = "prefalign-grpo-prompts-v1"


@dataclass(frozen=True)
class PromptSplit:
    """One prompt file: rows[i] is the prompt, token_ids[i] its rendered chat (assistant header
    open), as the sampler takes it."""

    name: str
    path: str
    rows: list[PromptRow]
    token_ids: list[list[int]]
    fingerprint: str
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def example_id(self, position: int) -> str:
        return self.rows[position].id

    def example_tokens(self, position: int) -> int:
        return len(self.token_ids[position])

    def describe(self) -> dict[str, object]:
        return {"path": self.path, "fingerprint": self.fingerprint, "prompts": len(self.rows),
                "kinds": _kinds(self.rows)}


def read_prompts(path: str, key: str) -> list[PromptRow]:
    """The prompt file's rows (a path, or bundled:NAME); a missing file is a ConfigError
    naming `key` (bad rows raise DataError with FILE:LINE: FIELD)."""
    try:
        return read_prompt_file(resolve_data_path(path))
    except (FileNotFoundError, KeyError) as error:
        raise ConfigError(f"{key}: {error}") from None


def prepare_prompt_split(name: str, path: str, rows: list[PromptRow],
                         tokenizer: PreTrainedTokenizerBase) -> PromptSplit:
    texts = [render_prompt(tokenizer, row.messages) for row in rows]
    token_ids = batch_token_ids(tokenizer, texts)
    identity = {k: v for k, v in tokenizer_identity(tokenizer).items() if k != "name_or_path"}
    digest = hashlib.sha256(json.dumps({"version": FINGERPRINT_VERSION, "file":
                                        file_sha256(resolve_data_path(path)),
                                        "tokenizer": identity},
                                       sort_keys=True).encode("utf-8"))
    for ids in token_ids:
        digest.update(json.dumps(ids).encode("utf-8"))
    return PromptSplit(name, path, rows, token_ids, digest.hexdigest())


def _kinds(rows: list[PromptRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        kind = str(row.columns.get("kind", "none"))
        counts[kind] = counts.get(kind, 0) + 1
    return counts
