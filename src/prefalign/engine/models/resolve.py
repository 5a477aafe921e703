"""A model to sample from, named by a model source (the alias, a .gguf file, a model directory)
or by a finished run directory (its trained `final/` model, in the run's dtype)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefalign.config import ModelSection, config_from_dict
from prefalign.data.tokenizer import load_tokenizer
from prefalign.engine.manifest import MANIFEST, read_manifest
from prefalign.engine.models.load import DTYPES, load_base_model, weight_hash

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase

FINAL = "final"


@dataclass(frozen=True)
class ResolvedModel:
    """The model (eval mode, no gradients), its tokenizer, and what a samples manifest records
    about it: source, run directory or None, dtype, weight hash."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    description: dict[str, Any]


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def load_model_or_run(name_or_run: str, dtype: str | None = None) -> ResolvedModel:
    """Load `name_or_run`: a run directory's final/ model (in the run's dtype unless `dtype`
    says otherwise), else the model source in `dtype` (default float32).
    FileNotFoundError for a run without final/; ModelSourceError for an unknown name."""
    if is_run_dir(name_or_run):
        run_dir = Path(name_or_run)
        section = config_from_dict(read_manifest(run_dir)["config"]).model
        if dtype is not None:
            section = replace(section, dtype=dtype)
        final_dir = run_dir / FINAL
        if not final_dir.is_dir():
            raise FileNotFoundError(f"{run_dir}: has no {FINAL}/ model (the run did not finish; "
                                    f"`prefalign train ... --resume` completes it)")
        model = load_final_model(final_dir, section)
        tokenizer = load_tokenizer(str(final_dir), trust_remote_code=section.trust_remote_code)
        source, run = str(final_dir), str(run_dir)
    else:
        section = ModelSection(source=name_or_run, dtype=dtype or "float32")
        model = load_base_model(section)
        model.requires_grad_(False)
        tokenizer = load_tokenizer(name_or_run)
        source, run = name_or_run, None
    description = {"source": source, "run": run, "dtype": section.dtype,
                   "weight_hash": weight_hash(model)}
    return ResolvedModel(model, tokenizer, description)


def load_final_model(final_dir: str | Path, section: ModelSection) -> nn.Module:
    """A run's `final/` model in `section.dtype`, from safetensors only. Eval mode, no
    gradients. A LoRA final/ (an adapter) is loaded onto the base its config names."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(final_dir), dtype=DTYPES[section.dtype],
        trust_remote_code=section.trust_remote_code, use_safetensors=True,
    )
    model.requires_grad_(False)
    return model.eval()
