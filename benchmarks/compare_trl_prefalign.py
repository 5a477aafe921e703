"""prefalign side of compare_trl.py: `prefalign.trainers.dpo.train.train(config)` as is, with a
stopwatch.

    .venv/bin/python benchmarks/compare_trl_prefalign.py SPEC.json

The run is the real `train()`; three module-level names are wrapped so the benchmark can see
inside it without changing what it does: `loop._one_step` (time, loss and log-probs at the end
of every optimiser step), `method.build_reference` (the reference pass: a precomputed reference
scores every pair here, before step 1) and `run.load_model` (the model's shape, and the same
LoRA A matrices as the TRL side). Each wrapper checks that the name still exists.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from compare_trl_common import (
    StepClock,
    machine_peaks,
    model_shape,
    read_json,
    reset_lora_a,
    threads_and_versions,
    write_json,
)


def wrap(module: Any, name: str, make_wrapper: Any) -> None:
    original = getattr(module, name, None)
    if original is None:
        raise RuntimeError(f"{module.__name__}.{name} is gone; update compare_trl_prefalign.py")
    setattr(module, name, make_wrapper(original))


def instrument(spec: dict[str, Any], clock: StepClock, seen: dict[str, Any]) -> None:
    """Wrap the three names (see the module docstring); `seen` collects what they observe."""
    from prefalign.trainers.dpo import method as method_module
    from prefalign.trainers.loop import loop
    from prefalign.trainers.loop import run as run_module

    def one_step(original):
        def timed(run, position, progress):
            clock.start()
            metrics = original(run, position, progress)
            if metrics is None:  # a skipped (non-finite) step
                clock.tick(float("nan"), float("nan"), float("nan"))
            else:
                clock.tick(metrics["loss"], metrics["logps/chosen"], metrics["logps/rejected"])
            return metrics
        return timed

    def build_reference(original):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            reference = original(*args, **kwargs)
            seen["reference_seconds"] = time.perf_counter() - start
            return reference
        return timed

    def load_model(original):
        def loaded(*args, **kwargs):
            result = original(*args, **kwargs)
            if spec["lora"]:
                seen["lora_a_reset"] = reset_lora_a(result.model, spec["seed"])
            seen["shape"] = model_shape(result.model)
            return result
        return loaded

    wrap(loop, "_one_step", one_step)
    wrap(method_module, "build_reference", build_reference)
    wrap(run_module, "load_model", load_model)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from prefalign.config import load_config
    from prefalign.trainers.dpo.train import train

    peaks = machine_peaks()
    clock = StepClock()
    seen: dict[str, Any] = {"reference_seconds": 0.0}
    instrument(spec, clock, seen)
    config = load_config(None, spec["prefalign_overrides"])
    outcome = train(config)
    if outcome.outcome != "completed":
        raise RuntimeError(f"prefalign run ended {outcome.outcome!r}")
    effective = {"model_dtype": config.model.dtype, "scorer": config.train.scorer,
                 "reference_strategy": config.reference.strategy, "autocast": config.train.autocast,
                 "reference_precision": config.reference.precision,
                 "gradient_checkpointing": config.model.gradient_checkpointing,
                 "lr_schedule": config.optim.schedule}
    return {**clock.results(), **seen, "peak_flops": peaks, "effective": effective,
            **threads_and_versions("torch", "transformers", "prefalign", "peft", "accelerate")}


def main(argv: list[str]) -> int:
    spec = read_json(argv[0])
    write_json(spec["result"], run(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
