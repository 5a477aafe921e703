"""prefalign side of compare_trl.py: the real trainer (`train` for dpo, `train_sft`, `train_rm`,
`train_grpo`) as is, with a stopwatch.

    .venv/bin/python benchmarks/compare_trl_prefalign.py SPEC.json

The run is the real trainer; module-level names are wrapped so the benchmark can see inside it
without changing what it does: `loop._one_step` (time, loss and the task's step values at the
end of every optimiser step: mean log-probs for dpo, mean rewards for rm, scored tokens for
sft), the method's `load_model` (the model's shape, the same LoRA A matrices as the TRL side, a
digest of the reward head) and, for dpo, `method.build_reference` (the reference pass: a
precomputed reference scores every pair here, before step 1) and, for grpo,
`rollout.sample_groups` and `GrpoMethod._judge` (the prompts each step sampled, its completions'
lengths, and step 1's prompt ids, completion ids, rewards and advantages, which the TRL worker
then trains its step 1 on). Each wrapper checks that the name still exists.
"""

from __future__ import annotations

import importlib
import sys
import time
from dataclasses import asdict
from typing import Any

from compare_trl_common import (
    StepClock,
    machine_peaks,
    model_shape,
    reset_lora_a,
    tensor_digest,
    threads_and_versions,
    worker_main,
)


def wrap(module: Any, name: str, make_wrapper: Any) -> None:
    original = getattr(module, name, None)
    if original is None:
        raise RuntimeError(f"{module.__name__}.{name} is gone; update compare_trl_prefalign.py")
    setattr(module, name, make_wrapper(original))


# per task: the trainer function, its Method class, and the metrics each step records
TASKS = {
    "dpo": ("prefalign.trainers.dpo.train", "train", "prefalign.trainers.dpo.method", "DpoMethod",
            ("loss", "logps/chosen", "logps/rejected")),
    "sft": ("prefalign.trainers.sft.train", "train_sft", "prefalign.trainers.sft.method",
            "SftMethod", ("loss", "tokens")),
    "rm": ("prefalign.trainers.rm.train", "train_rm", "prefalign.trainers.rm.method", "RmMethod",
           ("loss", "rewards/chosen", "rewards/rejected")),
    "grpo": ("prefalign.trainers.grpo.train", "train_grpo", "prefalign.trainers.grpo.method",
             "GrpoMethod", ("loss", "reward/mean", "completions/length_mean", "entropy",
                            "grad_norm")),
}


def instrument(spec: dict[str, Any], clock: StepClock, seen: dict[str, Any]) -> None:
    """Wrap the names of the module docstring; `seen` collects what they observe."""
    from prefalign.trainers.loop import loop

    _, _, method_module_name, method_class_name, metric_names = TASKS[spec["task"]]
    method_module = importlib.import_module(method_module_name)

    def one_step(original):
        def timed(run, position, progress):
            clock.start()
            metrics = original(run, position, progress)
            if metrics is None:  # a skipped (non-finite) step
                clock.tick(*(float("nan") for _ in metric_names))
            else:
                clock.tick(*(metrics[name] for name in metric_names))
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
        def loaded(self, config):
            result = original(self, config)
            if spec["lora"]:
                seen["lora_a_reset"] = reset_lora_a(result.model, spec["seed"])
            if spec["task"] == "rm":
                from prefalign.engine.models.reward import reward_head

                seen["reward_head_digest"] = tensor_digest(reward_head(result.model).weight)
            seen["shape"] = model_shape(result.model)
            return result
        return loaded

    wrap(loop, "_one_step", one_step)
    wrap(getattr(method_module, method_class_name), "load_model", load_model)
    if spec["task"] == "dpo":
        wrap(method_module, "build_reference", build_reference)
    if spec["task"] == "grpo":
        instrument_grpo(getattr(method_module, method_class_name), seen)


def instrument_grpo(method_class: type, seen: dict[str, Any]) -> None:
    """Record every training batch's sampled prompt positions and completion lengths, and
    batch 0's prompt ids, completion ids, rewards and advantages (`seen["step1"]`)."""
    from prefalign.trainers.grpo import rollout

    seen.update(sampled_positions=[], completion_lengths=[])

    def sample_groups(original):
        def recorded(model, tokenizer, split, positions, settings):
            groups = original(model, tokenizer, split, positions, settings)
            if split.name == "train":
                seen["sampled_positions"].append(list(positions))
                seen["completion_lengths"].append([len(t) for g in groups for t in g.completions])
                if "step1" not in seen:
                    seen["step1"] = {
                        "prompt_ids": [list(split.token_ids[g.position]) for g in groups],
                        "prompt_keys": [split.rows[g.position].id for g in groups],
                        "completions": [[list(t) for t in g.completions] for g in groups]}
            return groups
        return recorded

    def judge(original):
        def recorded(self, run, split, groups):
            per_row = original(self, run, split, groups)
            step1 = seen.get("step1")
            if split.name == "train" and step1 is not None and "rewards" not in step1:
                step1["rewards"] = per_row["rewards"].tolist()
                step1["advantages"] = per_row["advantages"].tolist()
            return per_row
        return recorded

    wrap(rollout, "sample_groups", sample_groups)
    wrap(method_class, "_judge", judge)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from prefalign.config import load_config

    trainer_module, trainer_name = TASKS[spec["task"]][:2]
    train = getattr(importlib.import_module(trainer_module), trainer_name)
    peaks = machine_peaks()
    clock = StepClock(spec["task"])
    seen: dict[str, Any] = {"reference_seconds": 0.0}
    instrument(spec, clock, seen)
    config = load_config(None, spec["prefalign_overrides"])
    outcome = train(config)
    if outcome.outcome != "completed":
        raise RuntimeError(f"prefalign run ended {outcome.outcome!r}")
    effective = {"model_dtype": config.model.dtype, "scorer": config.train.scorer,
                 "autocast": config.train.autocast,
                 "gradient_checkpointing": config.model.gradient_checkpointing,
                 "lr_schedule": config.optim.schedule}
    if spec["task"] == "dpo":
        effective.update(reference_strategy=config.reference.strategy,
                         reference_precision=config.reference.precision)
    if spec["task"] == "grpo":
        effective.update({f"grpo_{key}": value for key, value in asdict(config.grpo).items()})
    return {**clock.results(), **seen, "peak_flops": peaks, "effective": effective,
            **threads_and_versions("torch", "transformers", "prefalign", "peft", "accelerate")}


if __name__ == "__main__":
    sys.exit(worker_main(run, sys.argv[1:]))
