"""TRL side of compare_trl.py: DPOTrainer on the parent's pairs, in its order; one run per process.

    benchmarks/.venv-trl/bin/python benchmarks/compare_trl_trl.py SPEC.json

Runs in TRL's own virtual environment (prefalign is not installed there). The spec names the
model directory, the JSONL of pairs in prefalign's training order and the settings; the result
JSON gets per-step times, losses, log-probs and memory, the sequences each step saw, and (with
--tokens native) the token ids TRL made itself, for the parent to compare with prefalign's.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from typing import Any

import torch

from compare_trl_common import (
    StepClock,
    machine_peaks,
    reset_lora_a,
    trl_run_fields,
    worker_main,
)

TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
TEXT_COLUMNS = ("prompt", "chosen", "rejected")


class Recorder:
    """What the trainer saw in each training step, filled by `compute_loss` and a callback."""

    def __init__(self) -> None:
        self.clock = StepClock()
        self.pending: tuple[float, ...] | None = None  # loss, then the step values
        self.example_lengths: list[list[list[int]]] = []  # per step: [prompt, chosen, rejected]
        self.sequence_hashes: list[list[str]] = []
        self.reference_seconds = 0.0
        self.lora_a_reset = 0

    def see_batch(self, inputs: dict[str, torch.Tensor]) -> None:
        lengths = inputs["attention_mask"].sum(dim=1).tolist()  # (2B,): chosen rows, then rejected
        responses = inputs["completion_mask"].sum(dim=1).tolist()  # (2B,)
        pairs = len(lengths) // 2
        self.example_lengths.append([[lengths[i] - responses[i], responses[i], responses[pairs + i]]
                                  for i in range(pairs)])
        rows = inputs["input_ids"].tolist()
        self.sequence_hashes.append([sequence_hash(row[:n]) for row, n in zip(rows, lengths, strict=True)])


def sequence_hash(ids: list[int]) -> str:
    return hashlib.sha1(json.dumps(list(ids)).encode("ascii")).hexdigest()[:16]


def trainer_class(recorder: Recorder) -> type:
    """DPOTrainer that records each training step and accepts prefalign's pre-tokenised pairs."""
    from trl import DPOTrainer

    class RecordingDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" in dataset.column_names:
                return dataset  # --tokens same: prefalign's ids, already within max_length
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        def _precompute_ref_logps(self, dataset, name, batch_size):
            start = time.perf_counter()
            result = super()._precompute_ref_logps(dataset, name, batch_size)
            recorder.reference_seconds += time.perf_counter() - start
            return result

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if self.model.training:
                loss = result[0] if return_outputs else result
                metrics = self._metrics["train"]
                recorder.pending = (loss.item(), metrics["logps/chosen"][-1],
                                    metrics["logps/rejected"][-1])
                recorder.see_batch(inputs)
            return result

    return RecordingDPOTrainer


def step_callback(recorder: Recorder) -> Any:
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            recorder.clock.start()  # the first step's batch is already fetched here

        def on_step_end(self, args, state, control, **kwargs):
            recorder.clock.tick(*(recorder.pending or
                                  (float("nan"),) * (1 + len(recorder.clock.values))))
            recorder.pending = None

    return StepTimes()


def load_rows(spec: dict[str, Any]) -> Any:
    from datasets import Dataset

    columns = TOKEN_COLUMNS if spec["tokens"] == "same" else TEXT_COLUMNS
    with open(spec["data_file"], encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return Dataset.from_list([{"pair_index": r["pair_index"], **{c: r[c] for c in columns}}
                              for r in rows])


def dpo_config(spec: dict[str, Any]) -> Any:
    """Every setting that must match prefalign's side, written out (DPOConfig's own defaults
    differ in places: bf16 and gradient checkpointing default to on, lr to 1e-6, optim fused)."""
    from trl import DPOConfig

    return DPOConfig(
        output_dir=spec["run_dir"], seed=spec["seed"], data_seed=spec["seed"],
        per_device_train_batch_size=spec["batch_size"], gradient_accumulation_steps=1,
        max_steps=spec["steps"], train_sampling_strategy="sequential",
        learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch", weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999,
        adam_epsilon=1e-8, max_grad_norm=1.0,
        bf16=spec["bf16"], fp16=False, gradient_checkpointing=spec["gradient_checkpointing"],
        model_init_kwargs={"dtype": "float32"},
        beta=spec["beta"], loss_type=["sigmoid"], max_length=spec["max_length"],
        truncation_mode="keep_start", precompute_ref_log_probs=spec["trl_precompute_ref"],
        disable_dropout=True, logging_steps=1, save_strategy="no", report_to="none",
        disable_tqdm=True, dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),  # bf16 on a CPU-only machine needs it said
    )


def build_trainer(spec: dict[str, Any], recorder: Recorder) -> Any:
    from transformers import AutoTokenizer

    peft_config = None
    if spec["lora"]:
        from peft import LoraConfig

        lora = spec["lora"]
        peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                 target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM")
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"], local_files_only=True)
    trainer = trainer_class(recorder)(
        model=spec["model_dir"], args=dpo_config(spec), train_dataset=load_rows(spec),
        processing_class=tokenizer, peft_config=peft_config, callbacks=[step_callback(recorder)])
    if spec["lora"]:
        recorder.lora_a_reset = reset_lora_a(trainer.model, spec["seed"])
    return trainer


def expected_hashes(dataset: Any, batch_size: int, max_length: int) -> list[list[str]]:
    """Per step, the hashes of the sequences the collator builds from consecutive rows."""
    steps = []
    for start in range(0, len(dataset) - batch_size + 1, batch_size):
        rows = [dataset[i] for i in range(start, start + batch_size)]
        steps.append([sequence_hash((r["prompt_ids"] + r[f"{side}_ids"])[:max_length])
                      for side in ("chosen", "rejected") for r in rows])
    return steps


def effective_settings(trainer: Any) -> dict[str, Any]:
    """What TRL actually ran with, as far as its objects tell (not what the spec asked for)."""
    args = trainer.args
    checkpointing = getattr(args, "activation_checkpointing", args.gradient_checkpointing)
    return {"mixed_precision": str(trainer.accelerator.mixed_precision),
            "activation_checkpointing": bool(checkpointing),
            "optimizer": type(getattr(trainer.optimizer, "optimizer", trainer.optimizer)).__name__,
            "lr_scheduler": getattr(args.lr_scheduler_type, "value", str(args.lr_scheduler_type)),
            "model_dtype": str(trainer.model.dtype), "reference_model": trainer.ref_model is not None,
            "precompute_ref_log_probs": bool(args.precompute_ref_log_probs)}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    peaks = machine_peaks()
    recorder = Recorder()
    trainer = build_trainer(spec, recorder)
    dataset = trainer.train_dataset
    trainer.train()
    expected = expected_hashes(dataset, spec["batch_size"], spec["max_length"])
    seen = recorder.sequence_hashes
    result = {
        **recorder.clock.results(), "reference_seconds": recorder.reference_seconds,
        "lora_a_reset": recorder.lora_a_reset,
        "example_lengths": recorder.example_lengths,
        "computed_positions": [2 * len(step) * max(p + max(c, r) for p, c, r in step)
                               for step in recorder.example_lengths],  # padded (2B, T)
        "order_verified": seen == expected[: len(seen)] and len(seen) == spec["steps"],
        **trl_run_fields(trainer, len(dataset), peaks, effective_settings(trainer)),
    }
    if spec["tokens"] == "native":
        result["tokenized"] = [{"pair_index": row["pair_index"],
                                **{c: row[c] for c in TOKEN_COLUMNS}} for row in dataset]
    return result


if __name__ == "__main__":
    sys.exit(worker_main(run, sys.argv[1:]))
