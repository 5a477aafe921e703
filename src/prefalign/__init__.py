"""prefalign: align language models with human preferences (DPO and its relatives).

    import prefalign
    result = prefalign.train("configs/dpo-lora.yaml", optim__lr=1e-5, train_data=rows)
    prefalign.sft({"data": {"train": ["chats.jsonl"]}}, overrides={"train.max_steps": 20})
    report = prefalign.evaluate(result.run_dir, "eval-out", max_pairs=100)
    pairs = prefalign.load_pairs("bundled:hh-harmless-train").pairs
    print(prefalign.audit("bundled:hh-harmless-train").flags)   # e.g. the length bias

Names load on first use, so `import prefalign` stays light (no torch until a trainer runs).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("train", "sft", "reward_model", "grpo", "loop", "evaluate", "load_pairs", "audit",
        "resolve_config")
__all__ = [*_API, "Config", "load_config", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        from prefalign import api

        return getattr(api, name)
    if name in ("Config", "load_config"):
        from prefalign import config

        return getattr(config, name)
    raise AttributeError(f"module 'prefalign' has no attribute {name!r}")
