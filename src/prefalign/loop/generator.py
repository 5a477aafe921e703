"""The model the loop generates with: a model source (alias, .gguf, HF directory) or a finished
run directory (its `final/` policy), with its tokenizer and what provenance records about it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefalign.config import ModelSection
from prefalign.data.tokenizer import load_tokenizer
from prefalign.engine.manifest import MANIFEST
from prefalign.engine.models.load import load_base_model, weight_hash
from prefalign.engine.models.runs import load_policy, read_run

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Generator:
    """A model in eval mode without gradients, its tokenizer, and `describe()` for provenance."""

    source: str
    model: PreTrainedModel = field(repr=False)
    tokenizer: PreTrainedTokenizerBase = field(repr=False)
    weight_hash: str

    def describe(self) -> dict[str, Any]:
        template = self.tokenizer.chat_template or ""
        return {"model": self.source, "weight_hash": self.weight_hash,
                "chat_template": hashlib.sha256(template.encode("utf-8")).hexdigest()}


def load_generator(model_or_run: str) -> Generator:
    """A run directory (it has a manifest) gives its final/ policy; anything else is a source."""
    if (Path(model_or_run) / MANIFEST).is_file():
        run = read_run(model_or_run)
        model = load_policy(run)
        tokenizer = load_tokenizer(str(run.final_dir),
                                   trust_remote_code=run.config.model.trust_remote_code)
    else:
        model = load_base_model(ModelSection(source=model_or_run))
        tokenizer = load_tokenizer(model_or_run)
    model.requires_grad_(False)
    return Generator(model_or_run, model.eval(), tokenizer, weight_hash(model))
