"""TRL side of compare_trl.py's grpo configuration: GRPOTrainer on the parent's prompts (in
prefalign's order), one run per process.

    benchmarks/.venv-trl/bin/python benchmarks/compare_trl_trl_grpo.py SPEC.json

Runs in TRL's own virtual environment (prefalign is not installed there). Rows: `prompt` (the
chat messages), the prompt file's other columns and `prompt_id`, the columns prefalign's judge
passes to the reward function, which is `compare_trl_reward.kind_aware_reward` on both sides.
GRPOTrainer samples with `RepeatSampler(shuffle=False)`, so its prompts are the rows in order,
each G times. Step 1 generates as usual (its time is counted) and then trains on prefalign's
step-1 completion ids in place of its own (`_generate_single_turn` returns them), when every
prompt's token ids equal prefalign's: both step-1 losses are then over the same tokens, with
the same rewards and advantages, and the weights after step 1 should agree. Steps 2.. train on
TRL's own samples (its sampler's random stream is not prefalign's).

The result JSON gets per-step times, losses, mean rewards, mean completion lengths, mean −log π
of the sampled tokens, gradient norms, every completion's length, and the checks: prompts in
the planned order, their token ids equal to prefalign's, step 1's completions replaced.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import torch

from compare_trl_common import (
    StepClock,
    machine_peaks,
    trl_run_fields,
    worker_main,
)
from compare_trl_reward import kind_aware_reward


class Recorder:
    """What GRPOTrainer saw in each training step, filled by the trainer's hooks below."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.clock = StepClock("grpo")
        self.group_size = spec["group_size"]
        self.prompts_per_step = spec["batch_size"]
        self.planned_ids = spec["planned_prompt_ids"]  # prefalign's, every step's prompts in order
        self.step1 = spec["step1"]  # prefalign's step-1 rollout, or None: no replacement
        self.generations = 0
        self.prompt_ids_match: list[bool] = []
        self.prompt_keys: list[list[str]] = []
        self.completion_lengths: list[list[int]] = []
        self.injected = False
        self.own_step1_lengths: list[int] = []
        self.step1_seen: dict[str, list[float]] = {}
        self.last_logps: torch.Tensor | None = None
        self.pending: tuple[float, ...] | None = None
        self.grad_norms: list[float] = []

    def planned_prompts(self, step: int) -> list[list[int]]:
        start = step * self.prompts_per_step
        return self.planned_ids[start : start + self.prompts_per_step]

    def completions(self, prompt_ids: list[list[int]], completion_ids: list) -> list:
        """Check this generation's prompt ids; on step 1, prefalign's completions instead."""
        prompts = [list(ids) for ids in prompt_ids[:: self.group_size]]  # one row per group
        self.prompt_ids_match.append(prompts == self.planned_prompts(self.generations))
        first = self.generations == 0
        self.generations += 1
        if not first or self.step1 is None or not self.prompt_ids_match[-1]:
            return completion_ids
        self.own_step1_lengths = [len(ids) for ids in completion_ids]
        self.injected = True
        G = self.group_size
        return [list(self.step1["completions"][i // G][i % G]) for i in range(len(prompt_ids))]

    def see_rollout(self, inputs: list[dict[str, Any]], output: dict[str, Any],
                    rewards: list[float]) -> None:
        self.prompt_keys.append([row["prompt_id"] for row in inputs[:: self.group_size]])
        self.completion_lengths.append(output["completion_mask"].sum(dim=1).tolist())
        if not self.step1_seen:
            self.step1_seen = {"rewards": rewards, "advantages": output["advantages"].tolist()}


def trainer_class(recorder: Recorder) -> type:
    """GRPOTrainer with the hooks of the module docstring (each calls TRL's own method)."""
    from trl import GRPOTrainer

    class RecordingGRPOTrainer(GRPOTrainer):
        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations,
                                  has_tool_images=False):
            completion_ids, logprobs = super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
            if self.model.training:
                replaced = recorder.completions(prompt_ids, completion_ids)
                if replaced is not completion_ids:
                    completion_ids, logprobs = replaced, None
            return completion_ids, logprobs

        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            if self.model.training:
                count = len(inputs)
                rewards = list(self._logs["rewards"][kind_aware_reward.__name__])[-count:]
                recorder.see_rollout(inputs, output, rewards)
            return output

        def _get_per_token_logps_and_entropies(self, *args, **kwargs):
            result = super()._get_per_token_logps_and_entropies(*args, **kwargs)
            if kwargs.get("compute_entropy"):  # the training forward of _compute_loss
                recorder.last_logps = result[0].detach()
            return result

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if self.model.training:
                mask = inputs["completion_mask"].to(recorder.last_logps.dtype)  # (B, C)
                neg_logp = -(recorder.last_logps * mask).sum() / mask.sum().clamp(min=1)
                metrics = self._metrics["train"]
                recorder.pending = (loss.item(), metrics["reward"][-1],
                                    metrics["completions/mean_length"][-1], neg_logp.item(),
                                    math.nan)  # grad_norm: from the log, after the step
            return loss

    return RecordingGRPOTrainer


def callbacks(recorder: Recorder) -> list[Any]:
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            recorder.clock.start()  # generation happens inside the step (_prepare_inputs)

        def on_step_end(self, args, state, control, **kwargs):
            recorder.clock.tick(*(recorder.pending or
                                  (math.nan,) * (1 + len(recorder.clock.values))))
            recorder.pending = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "grad_norm" in logs:
                recorder.grad_norms.append(float(logs["grad_norm"]))

    return [StepTimes()]


def grpo_config(spec: dict[str, Any]) -> Any:
    """Every setting that must match prefalign's side, written out (GRPOConfig's own defaults
    differ in places: bf16 and gradient checkpointing on, loss_type dapo, shuffled prompts)."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=spec["run_dir"], seed=spec["seed"], data_seed=spec["seed"],
        per_device_train_batch_size=spec["batch_size"] * spec["group_size"],  # completions
        gradient_accumulation_steps=1, steps_per_generation=1, max_steps=spec["steps"],
        shuffle_dataset=False, learning_rate=spec["lr"], lr_scheduler_type="constant",
        warmup_steps=0, optim="adamw_torch", weight_decay=0.0, adam_beta1=0.9,
        adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0,
        bf16=False, fp16=False, gradient_checkpointing=spec["gradient_checkpointing"],
        model_init_kwargs={"dtype": "float32"}, disable_dropout=True,
        num_generations=spec["group_size"], max_completion_length=spec["max_new_tokens"],
        temperature=1.0, top_p=1.0, top_k=0, min_p=None, repetition_penalty=1.0,
        beta=0.0, num_iterations=1, epsilon=0.2, epsilon_high=0.2, scale_rewards="group",
        loss_type="dr_grpo", mask_truncated_completions=False,
        importance_sampling_level="token", top_entropy_quantile=1.0, use_vllm=False,
        log_completions=False, logging_steps=1, save_strategy="no", report_to="none",
        disable_tqdm=True, dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
    )


def load_rows(spec: dict[str, Any]) -> list[dict[str, Any]]:
    with open(spec["data_file"], encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def build_trainer(spec: dict[str, Any], recorder: Recorder, rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"], local_files_only=True)
    return trainer_class(recorder)(
        model=spec["model_dir"], reward_funcs=[kind_aware_reward], args=grpo_config(spec),
        train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        callbacks=callbacks(recorder))


def effective_settings(trainer: Any) -> dict[str, Any]:
    """What TRL actually ran with, as far as its objects tell (not what the spec asked for)."""
    args = trainer.args
    return {"mixed_precision": str(trainer.accelerator.mixed_precision),
            "gradient_checkpointing": bool(args.gradient_checkpointing),
            "optimizer": type(getattr(trainer.optimizer, "optimizer", trainer.optimizer)).__name__,
            "lr_scheduler": getattr(args.lr_scheduler_type, "value", str(args.lr_scheduler_type)),
            "model_dtype": str(trainer.model.dtype), "reference_model": trainer.ref_model is not None,
            "loss_type": trainer.loss_type, "scale_rewards": trainer.scale_rewards,
            "beta": trainer.beta, "epsilon": [trainer.epsilon_low, trainer.epsilon_high],
            "num_iterations": trainer.num_iterations, "eos_token_ids": list(trainer.eos_token_ids),
            "generation": {k: trainer.generation_kwargs.get(k) for k in
                           ("max_new_tokens", "temperature", "top_p", "top_k", "min_p",
                            "repetition_penalty")}}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    peaks = machine_peaks()
    recorder = Recorder(spec)
    rows = load_rows(spec)
    trainer = build_trainer(spec, recorder, rows)
    trainer.train()
    results = recorder.clock.results()
    results["grad_norm"] = (recorder.grad_norms + [math.nan] * spec["steps"])[: spec["steps"]]
    planned_keys = [row["prompt_id"] for row in rows]
    seen_keys = [key for step in recorder.prompt_keys for key in step]
    return {
        **results, "reference_seconds": 0.0, "completion_lengths": recorder.completion_lengths,
        "order_verified": seen_keys == planned_keys[: len(seen_keys)]
        and len(recorder.prompt_keys) == spec["steps"],
        "prompt_ids_match": recorder.prompt_ids_match, "step1_injected": recorder.injected,
        "step1": {**recorder.step1_seen, "own_completion_lengths": recorder.own_step1_lengths},
        **trl_run_fields(trainer, len(trainer.train_dataset), peaks, effective_settings(trainer)),
    }


if __name__ == "__main__":
    sys.exit(worker_main(run, sys.argv[1:]))
