"""What both workers of compare_trl.py share: step clock, memory, matmul peak, LoRA init, I/O.

Imports only the standard library and torch: the TRL worker runs in its own virtual environment,
where prefalign is not installed.
"""

from __future__ import annotations

import json
import re
import resource
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

PEAK_MATMUL_SIZE = 2048  # n of the n×n @ n×n products timed for the machine's peak FLOP/s
PEAK_MATMUL_REPEATS = 5


def read_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def proc_status_mib(field: str) -> float:
    """A memory line of /proc/self/status in MiB (VmHWM: peak resident, VmRSS: resident now)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024  # the kernel writes kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# What each task records beside the loss at every step (the step's means over its examples)
STEP_VALUES = {"dpo": ("logps_chosen", "logps_rejected"),
               "rm": ("rewards_chosen", "rewards_rejected"),
               "sft": ("scored_tokens",),
               # grpo: neg_logp_mean, the mean −log π of the sampled tokens (prefalign's
               # `entropy`); grad_norm, the norm before clipping
               "grpo": ("reward_mean", "completion_length_mean", "neg_logp_mean", "grad_norm")}


class StepClock:
    """Wall time, loss, the task's `STEP_VALUES` and memory at the end of every optimiser step.

    Step 1 runs from `start()` to its end; step k > 1 from the end of step k-1 to its end, so
    whatever the loop does between steps (logging, data) is counted once.
    """

    def __init__(self, task: str = "dpo") -> None:
        self.started: float | None = None
        self.ends: list[float] = []
        self.losses: list[float] = []
        self.values: dict[str, list[float]] = {name: [] for name in STEP_VALUES[task]}
        self.rss_mib: list[float] = []
        self.peak_rss_mib = 0.0

    def start(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def tick(self, loss: float, *values: float) -> None:
        self.ends.append(time.perf_counter())
        self.losses.append(float(loss))
        for column, value in zip(self.values.values(), values, strict=True):
            column.append(float(value))
        self.rss_mib.append(proc_status_mib("VmRSS"))
        # The high-water mark up to the end of the last step: what saving a checkpoint after
        # training may add is not part of the comparison.
        self.peak_rss_mib = proc_status_mib("VmHWM")

    def step_seconds(self) -> list[float]:
        if self.started is None:
            return []
        starts = [self.started, *self.ends[:-1]]
        return [end - start for start, end in zip(starts, self.ends, strict=True)]

    def results(self) -> dict[str, Any]:
        return {"step_seconds": self.step_seconds(), "losses": self.losses, **self.values,
                "rss_mib": self.rss_mib, "peak_rss_mib": self.peak_rss_mib}


def matmul_peak_flops(dtype: torch.dtype, size: int = PEAK_MATMUL_SIZE) -> float:
    """The best FLOP/s (2·n³ per product) of `PEAK_MATMUL_REPEATS` products of two (size, size)
    matrices, by torch.mm or by oneDNN's linear kernel where this torch has it, whichever is
    faster: the peak is the machine's, not one library's (on AMD CPUs MKL's float32 kernels
    use AVX2 and oneDNN's AVX-512; prefalign routes float32 products to oneDNN)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dtype)  # (n, n)
    b = torch.randn(size, size, generator=generator).to(dtype)  # (n, n)
    products = [lambda: torch.mm(a, b)]
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        products.append(lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], ""))
    best = float("inf")
    for product in products:
        try:
            product()  # warm-up: library initialisation and kernel selection
        except RuntimeError:  # oneDNN without a kernel for this dtype on this CPU: torch.mm's
            continue
        for _ in range(PEAK_MATMUL_REPEATS):
            start = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def machine_peaks() -> dict[str, float]:
    """Measured matmul peak FLOP/s of this process, float32 and bfloat16."""
    return {"float32": matmul_peak_flops(torch.float32),
            "bfloat16": matmul_peak_flops(torch.bfloat16)}


def _lora_key(name: str) -> str:
    """`...layers.3.self_attn.q_proj.lora_A.default.weight` -> `layers.3.self_attn.q_proj`."""
    match = re.search(r"layers\.\d+\..*?(?=\.lora_A)", name)
    return match.group(0) if match else name


def reset_lora_a(model: torch.nn.Module, seed: int) -> int:
    """Give every LoRA A matrix the same values in both workers; returns how many it set.

    peft draws A from kaiming_uniform(a=√5), i.e. U(−1/√fan_in, 1/√fan_in), from the global
    RNG, whose state at that point differs between TRL and prefalign. Drawing each A from a
    generator seeded by (seed, layer name) makes the two adapters identical; B stays 0, so
    the starting policy is still the base model.
    """
    count = 0
    for name, parameter in model.named_parameters():
        if ".lora_A." not in name:
            continue
        generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(_lora_key(name).encode()))
        bound = parameter.shape[1] ** -0.5  # (r, fan_in)
        values = (torch.rand(parameter.shape, generator=generator) * 2 - 1) * bound
        with torch.no_grad():
            parameter.copy_(values.to(parameter.dtype))
        count += 1
    return count


def reward_head_weight(hidden_size: int, seed: int) -> torch.Tensor:
    """(1, H) float32: prefalign's reward-head initialisation (engine/models/reward.py,
    `init_reward_head`): N(0, 1/(H + 1)) drawn from a generator seeded `seed`. The TRL worker
    copies it into its model's `score` head, so both start from the same reward model."""
    generator = torch.Generator().manual_seed(seed)
    std = (hidden_size + 1) ** -0.5
    return torch.randn((1, hidden_size), generator=generator, dtype=torch.float32) * std


def tensor_digest(tensor: torch.Tensor) -> str:
    """A short hash of a tensor's float32 values (the parent compares both workers' heads)."""
    data = tensor.detach().to(torch.float32).contiguous().cpu().numpy().tobytes()
    return f"{zlib.crc32(data):08x}"


def threads_and_versions(*modules: str) -> dict[str, Any]:
    """torch threads and the versions of the named packages, for the result file."""
    import importlib.metadata

    versions = {}
    for name in modules:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"threads": torch.get_num_threads(), "versions": versions}


def model_shape(model: torch.nn.Module) -> dict[str, int]:
    """Parameter counts and the sizes the FLOP estimate needs (see compare_trl_report.py).

    body_parameters: every matmul weight but the output projection (the input embedding is a
    lookup); head_parameters: the output projection (vocabulary × width, tied or not; a reward
    model's scalar `score` head, 1 × width).
    """
    config = getattr(model, "config", None)
    parameters = {id(p): p for p in model.parameters()}  # tied weights counted once
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    head = output.weight if output is not None else _score_head(model).weight
    total = sum(p.numel() for p in parameters.values())
    lookup_only = 0 if embedding is head else embedding.numel()
    return {
        "parameters": total,
        "trainable_parameters": sum(p.numel() for p in parameters.values() if p.requires_grad),
        "body_parameters": total - lookup_only - head.numel(),
        "head_parameters": head.numel(),
        "layers": int(getattr(config, "num_hidden_layers", 0) or 0),
        "hidden_size": int(getattr(config, "hidden_size", 0) or 0),
    }


def _score_head(model: torch.nn.Module) -> torch.nn.Module:
    """The `score` head of a sequence-classification model, or of a peft wrapper of one."""
    for name, module in model.named_modules():
        if name.split(".")[-1] == "score" and isinstance(module, torch.nn.Linear):
            return module
    raise ValueError(f"{type(model).__name__} has neither an output projection nor a score head")


TRL_MODULES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")


def trl_run_fields(trainer: Any, rows: int, peaks: dict[str, float],
                   effective: dict[str, Any]) -> dict[str, Any]:
    """What every TRL worker's result records beside its own measurements: the rows TRL kept
    after its preparation, the matmul peaks, the model's shape, the settings TRL ran with,
    threads and package versions."""
    return {"rows_after_preparation": rows, "peak_flops": peaks,
            "shape": model_shape(trainer.model), "effective": effective,
            **threads_and_versions(*TRL_MODULES)}


def worker_main(run: Callable[[dict[str, Any]], dict[str, Any]], argv: list[str]) -> int:
    """A worker's entry point: read the spec JSON named by argv[0], run, write its result."""
    spec = read_json(argv[0])
    write_json(spec["result"], run(spec))
    return 0
