"""TRL side of compare_trl.py's sft and rm configurations: SFTTrainer or RewardTrainer on the
parent's rows (prefalign's token ids, in its training order); one run per process.

    benchmarks/.venv-trl/bin/python benchmarks/compare_trl_trl_sft_rm.py SPEC.json

Runs in TRL's own virtual environment (prefalign is not installed there).
- sft: rows of `input_ids` and `completion_mask` (compare_trl_sft_rm.py); SFTTrainer with
  `completion_only_loss=True` builds labels from the mask (-100 where it is 0) and does not
  tokenise or add tokens again (an `input_ids` column marks a processed dataset). Its default
  collator pads each batch (no packing, no padding-free). The loss is the summed NLL of the
  scored tokens over the step's count of them (`num_items_in_batch`: labels[..., 1:] that are not
  -100), as prefalign's: both are the per-token mean over the whole optimiser step.
- rm: rows of `chosen_ids` and `rejected_ids` (prompt + reply); RewardTrainer pads the 2B
  sequences into one batch; the reward is the `score` head at each sequence's last token that is
  not the pad token (transformers' rule, which prefalign follows). Its `score` head is replaced by
  prefalign's initialisation (`compare_trl_common.reward_head_weight`) before training. The loss
  is the mean over pairs of −log σ(r⁺ − r⁻), as prefalign's.
The result JSON gets per-step times, losses, the step values (scored tokens; mean rewards),
memory, and whether the batches were the planned ones in order (hashes of their sequences).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch

from compare_trl_common import (
    StepClock,
    machine_peaks,
    reward_head_weight,
    tensor_digest,
    trl_run_fields,
    worker_main,
)
from compare_trl_trl import sequence_hash, step_callback


class Recorder:
    """What the trainer saw in each training step, filled by `compute_loss` and a callback."""

    def __init__(self, task: str) -> None:
        self.clock = StepClock(task)
        self.pending: tuple[float, ...] | None = None
        self.sequence_hashes: list[list[str]] = []
        self.positions: list[int] = []  # per step: the padded batch's (rows × width)

    def see_batch(self, inputs: dict[str, torch.Tensor]) -> None:
        lengths = inputs["attention_mask"].sum(dim=1).tolist()  # (rows,)
        rows = inputs["input_ids"].tolist()
        self.sequence_hashes.append([sequence_hash(row[:n]) for row, n in zip(rows, lengths, strict=True)])
        self.positions.append(inputs["input_ids"].numel())


def sft_trainer_class(recorder: Recorder) -> type:
    from trl import SFTTrainer

    class RecordingSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if self.model.training:
                loss = result[0] if return_outputs else result
                scored = (inputs["labels"][..., 1:] != -100).sum().item()
                recorder.pending = (loss.item(), float(scored))
                recorder.see_batch(inputs)
            return result

    return RecordingSFTTrainer


def reward_trainer_class(recorder: Recorder) -> type:
    from trl import RewardTrainer

    class RecordingRewardTrainer(RewardTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
            if self.model.training:
                chosen, rejected = torch.chunk(outputs.logits.detach().squeeze(-1), chunks=2)
                recorder.pending = (loss.item(), chosen.mean().item(), rejected.mean().item())
                recorder.see_batch(inputs)
            return (loss, outputs) if return_outputs else loss

    return RecordingRewardTrainer


def common_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """Every setting that must match prefalign's side, written out (the configs' own defaults
    differ: bf16 and gradient checkpointing default to on, the optimiser to a fused one)."""
    return dict(
        output_dir=spec["run_dir"], seed=spec["seed"], data_seed=spec["seed"],
        per_device_train_batch_size=spec["batch_size"], gradient_accumulation_steps=1,
        max_steps=spec["steps"], train_sampling_strategy="sequential",
        learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch", weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999,
        adam_epsilon=1e-8, max_grad_norm=1.0,
        bf16=spec["bf16"], fp16=False, gradient_checkpointing=spec["gradient_checkpointing"],
        model_init_kwargs={"dtype": "float32"}, max_length=spec["max_length"],
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
    )


def load_rows(spec: dict[str, Any]) -> list[dict[str, Any]]:
    with open(spec["data_file"], encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def build_trainer(spec: dict[str, Any], recorder: Recorder, rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"], local_files_only=True)
    callbacks = [step_callback(recorder)]
    if spec["task"] == "sft":
        from trl import SFTConfig

        dataset = Dataset.from_list([{"input_ids": r["input_ids"],
                                      "completion_mask": r["completion_mask"]} for r in rows])
        args = SFTConfig(**common_settings(spec), completion_only_loss=True, packing=False,
                         padding_free=False, loss_type="nll", shuffle_dataset=False)
        return sft_trainer_class(recorder)(model=spec["model_dir"], args=args,
                                           train_dataset=dataset, processing_class=tokenizer,
                                           callbacks=callbacks)
    from trl import RewardConfig

    dataset = Dataset.from_list([{"chosen_ids": r["chosen_input_ids"],
                                  "rejected_ids": r["rejected_input_ids"]} for r in rows])
    args = RewardConfig(**common_settings(spec), disable_dropout=True,
                        center_rewards_coefficient=None)
    trainer = reward_trainer_class(recorder)(model=spec["model_dir"], args=args,
                                             train_dataset=dataset, processing_class=tokenizer,
                                             callbacks=callbacks)
    set_reward_head(trainer.model, spec["seed"])
    return trainer


def set_reward_head(model: torch.nn.Module, seed: int) -> None:
    """prefalign's head initialisation in place of transformers' random one (same shape)."""
    head = model.score
    with torch.no_grad():
        head.weight.copy_(reward_head_weight(head.in_features, seed).to(head.weight.dtype))


def planned(spec: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[list, list]:
    """Per step, the hashes of the sequences of consecutive rows (in the collator's order:
    sft one per row; rm every chosen, then every rejected) and the rows' lengths."""
    size, hashes, lengths = spec["batch_size"], [], []
    for start in range(0, len(rows) - size + 1, size):
        batch = rows[start : start + size]
        if spec["task"] == "sft":
            hashes.append([sequence_hash(r["input_ids"]) for r in batch])
            lengths.append([[len(r["input_ids"]), sum(r["completion_mask"][1:])] for r in batch])
        else:
            hashes.append([sequence_hash(r[f"{side}_input_ids"])
                           for side in ("chosen", "rejected") for r in batch])
            lengths.append([r["lengths"] for r in batch])
    return hashes, lengths


def effective_settings(trainer: Any) -> dict[str, Any]:
    """What TRL actually ran with, as far as its objects tell (not what the spec asked for)."""
    args = trainer.args
    return {"mixed_precision": str(trainer.accelerator.mixed_precision),
            "gradient_checkpointing": bool(args.gradient_checkpointing),
            "optimizer": type(getattr(trainer.optimizer, "optimizer", trainer.optimizer)).__name__,
            "lr_scheduler": getattr(args.lr_scheduler_type, "value", str(args.lr_scheduler_type)),
            "model_dtype": str(trainer.model.dtype),
            "pad_token_id": trainer.processing_class.pad_token_id,
            "padding_free": bool(getattr(args, "padding_free", False)),
            "packing": bool(getattr(args, "packing", False))}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    peaks = machine_peaks()
    recorder = Recorder(spec["task"])
    rows = load_rows(spec)
    trainer = build_trainer(spec, recorder, rows)
    extra = {}
    if spec["task"] == "rm":
        extra["reward_head_digest"] = tensor_digest(trainer.model.score.weight)
    trainer.train()
    expected, lengths = planned(spec, rows)
    seen = recorder.sequence_hashes
    return {
        **recorder.clock.results(), **extra, "reference_seconds": 0.0,
        "example_lengths": lengths[: len(seen)], "computed_positions": recorder.positions,
        "order_verified": seen == expected[: len(seen)] and len(seen) == spec["steps"],
        **trl_run_fields(trainer, len(trainer.train_dataset), peaks, effective_settings(trainer)),
    }


if __name__ == "__main__":
    sys.exit(worker_main(run, sys.argv[1:]))
