"""Load the policy model: a safetensors directory, a GGUF file or an alias; optionally with LoRA.

Weights are never unpickled: directories must hold `.safetensors` weights (a directory with only
`pytorch_model.bin` is refused) and GGUF files are plain tensor containers. Starting from an
existing LoRA adapter (`model.adapter`) continues training that adapter; the frozen_copy and
precomputed references are then the base model with the adapter merged as it was at the start,
and adapter_off is the base model without it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prefalign.config import LoraSection, ModelSection
from prefalign.data.tokenizer import load_tokenizer
from prefalign.engine.forward.model_features import untested_warning
from prefalign.engine.forward.recompute import recompute_blocks
from prefalign.engine.models.gguf_cache import load_gguf_model
from prefalign.sources import ModelSource, resolve_model_source

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_ADAPTER_WEIGHTS = "adapter_model.safetensors"
_ADAPTER_CONFIG = "adapter_config.json"
_HASH_BLOCK = 1 << 24  # bytes read at a time when hashing adapter files


class ModelLoadError(ValueError):
    """A model, adapter or LoRA setting that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class LoadedModel:
    """The policy as loaded. model: a PeftModel when `lora`, else the transformers model.
    weight_hash: `weight_hash` of the base weights before any adapter or LoRA layer.
    adapter / adapter_hash: the starting adapter directory and the sha256 of its files."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    source: ModelSource
    weight_hash: str
    dtype: torch.dtype
    lora: bool
    adapter: str | None = None
    adapter_hash: str | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for the run manifest."""
        parameters = list(self.model.parameters())
        return {
            "source": self.source.display_name,
            "weight_hash": self.weight_hash,
            "dtype": str(self.dtype).removeprefix("torch."),
            "lora": self.lora,
            "adapter": self.adapter,
            "adapter_hash": self.adapter_hash,
            "parameters": sum(p.numel() for p in parameters),
            "trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
        }


def load_model(model: ModelSection, lora: LoraSection) -> LoadedModel:
    """The policy and its tokenizer: base weights, then the starting adapter or a fresh LoRA."""
    if model.adapter is not None and not lora.enabled:
        raise ModelLoadError(
            f"model.adapter: continuing a LoRA adapter ({model.adapter}) needs lora.enabled: true"
        )
    source = resolve_model_source(model.source)
    tokenizer = load_tokenizer(model.source, trust_remote_code=model.trust_remote_code)
    base = load_base_model(model, source)
    if (warning := untested_warning(base)) is not None:
        logger.warning("%s: %s", source.display_name, warning)
    base_hash = weight_hash(base)
    if model.gradient_checkpointing:
        mode = "pointwise" if model.gradient_checkpointing == "pointwise" else "blocks"
        recompute_blocks(base, mode)
    adapter_hash = None
    if model.adapter is not None:
        policy, adapter_hash = _continue_adapter(base, model.adapter, lora)
    elif lora.enabled:
        policy = apply_lora(base, lora)
    else:
        policy = base
    return LoadedModel(
        model=policy,
        tokenizer=tokenizer,
        source=source,
        weight_hash=base_hash,
        dtype=DTYPES[model.dtype],
        lora=lora.enabled,
        adapter=model.adapter,
        adapter_hash=adapter_hash,
    )


def load_base_model(model: ModelSection, source: ModelSource | None = None) -> PreTrainedModel:
    """The base weights of `model.source` (no adapter), in `model.dtype`, in eval mode."""
    from transformers import AutoModelForCausalLM

    source = source or resolve_model_source(model.source)
    if source.gguf_file is not None:
        loaded = load_gguf_model(
            source, DTYPES[model.dtype], trust_remote_code=model.trust_remote_code
        )
    else:
        check_safetensors_only(source.path)
        loaded = AutoModelForCausalLM.from_pretrained(
            str(source.path),
            dtype=DTYPES[model.dtype],
            trust_remote_code=model.trust_remote_code,
            use_safetensors=True,
            **source.pretrained_kwargs(),
        )
    if getattr(loaded, "is_quantized", False):
        raise ModelLoadError(f"{source.display_name}: loaded as a quantized model; cannot train it")
    return loaded.eval()


def load_reference_model(model: ModelSection, expected_hash: str | None = None) -> PreTrainedModel:
    """A frozen reference: the base weights plus the starting adapter merged in, if any.

    expected_hash: the policy's `weight_hash`; the base read again from disk must match it.
    """
    reference = load_base_model(model)
    if expected_hash is not None and weight_hash(reference) != expected_hash:
        raise ModelLoadError(
            f"{model.source}: the weights read again for the reference differ from the policy's "
            f"base weights (did the files change since the policy was loaded?)"
        )
    if model.adapter is not None:
        from peft import PeftModel

        _check_adapter_dir(Path(model.adapter))
        reference = PeftModel.from_pretrained(reference, model.adapter).merge_and_unload()
    reference.eval()
    reference.requires_grad_(False)
    return reference


def check_safetensors_only(directory: Path) -> None:
    """ModelLoadError unless `directory` holds safetensors weights (pickle files are refused)."""
    if any(directory.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise ModelLoadError(
            f"{directory}: holds only pickle weights ({', '.join(pickles)}); prefalign loads "
            f"safetensors only, because unpickling a file can run arbitrary code. Convert the "
            f"model once in a trusted environment (model.save_pretrained(dir)) or use a GGUF file"
        )
    raise ModelLoadError(f"{directory}: no model weights (*.safetensors) found")


def apply_lora(model: PreTrainedModel, lora: LoraSection) -> nn.Module:
    """Wrap `model` in a fresh peft LoRA adapter; unknown target modules are an error."""
    from peft import LoraConfig, get_peft_model

    targets: str | list[str] = list(lora.target_modules)
    if targets == ["all-linear"]:
        targets = "all-linear"  # peft's keyword for every linear layer but the output head
    else:
        check_target_modules(model, targets)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def check_target_modules(model: nn.Module, targets: Iterable[str]) -> None:
    """Raise ModelLoadError naming the targets that match no linear layer, and those that exist."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        available = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise ModelLoadError(
            f"lora.target_modules: {missing} match no linear layer of this model; "
            f"its linear layers are {available} (or use all-linear)"
        )


def _continue_adapter(
    base: PreTrainedModel, adapter: str, lora: LoraSection
) -> tuple[nn.Module, str]:
    from peft import PeftModel

    directory = Path(adapter)
    _check_adapter_dir(directory)
    policy = PeftModel.from_pretrained(base, str(directory), is_trainable=True)
    _warn_lora_differences(policy.peft_config["default"], lora, adapter)
    return policy, adapter_files_hash(directory)


def _check_adapter_dir(directory: Path) -> None:
    if not (directory / _ADAPTER_CONFIG).is_file():
        raise ModelLoadError(f"model.adapter: {directory} has no {_ADAPTER_CONFIG}")
    if not (directory / _ADAPTER_WEIGHTS).is_file():
        raise ModelLoadError(
            f"model.adapter: {directory} has no {_ADAPTER_WEIGHTS}; prefalign loads adapters in "
            f"safetensors only (pickle .bin files can run arbitrary code when read)"
        )


def _warn_lora_differences(adapter_config: Any, lora: LoraSection, adapter: str) -> None:
    """The adapter's own settings win; say so when the lora section asked for others."""
    asked = {"r": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
             "target_modules": set(lora.target_modules)}
    found = {key: getattr(adapter_config, key) for key in asked}
    found["target_modules"] = set(found["target_modules"] or ())
    differing = {key: found[key] for key in asked if asked[key] != found[key]}
    if differing:
        logger.warning("model.adapter %s keeps its own LoRA settings %s; the lora section's "
                       "values for these are ignored", adapter, differing)


def adapter_files_hash(directory: Path) -> str:
    """sha256 over the adapter's config and safetensors weights (file bytes, in that order)."""
    digest = hashlib.sha256()
    for name in (_ADAPTER_CONFIG, _ADAPTER_WEIGHTS):
        digest.update(name.encode("utf-8") + b"\0")
        with open(directory / name, "rb") as handle:
            while block := handle.read(_HASH_BLOCK):
                digest.update(block)
    return digest.hexdigest()


def weight_hash(model: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 over every state-dict tensor's (name, dtype, shape, bytes), in sorted name order.

    Tied weights appear under each of their names, as `state_dict()` lists them.
    """
    state = model.state_dict() if isinstance(model, nn.Module) else model
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach()
        header = f"{name}\0{str(tensor.dtype).removeprefix('torch.')}\0{tuple(tensor.shape)}\0"
        digest.update(header.encode("utf-8"))
        if tensor.numel():
            flat = tensor.to("cpu").contiguous().reshape(-1).view(torch.uint8)  # (bytes,)
            digest.update(memoryview(flat.numpy()))
    return digest.hexdigest()
