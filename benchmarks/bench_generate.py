"""Sampling throughput: prefalign's sampler against transformers' `generate` on SmolLM2-135M.

Both sides decode the same prompts (the evaluation's seeded sample, half harmful, half benign,
rendered with SmolLM2's chat template) with the same settings: `--samples` responses per
prompt, up to `--new-tokens` new tokens, sampling at `--temperature` / `--top-k` / `--top-p`,
`--batch` prompts per batch, stopping at `<|im_end|>`; transformers as
`generate(num_return_sequences=samples)` on each batch of prompts (longest first, as the
sampler takes them). One process, one model, the same CPU products (`--cpu-matmul`) for both.

Tokens are the generated tokens up to and including the stop token (padding after it is not
counted). Beside each side's tokens/s it prints the rate the machine allows for that side's
own decode steps: the bytes a step must read (every weight once, and the KV cache of every
row) over the memory bandwidth measured here (a 1 GiB tensor copy), and the same steps'
multiply-adds over the float32 matmul rate measured here (2048×2048 `linear`).

    .venv/bin/python benchmarks/bench_generate.py                  # 64 prompts × 8 × 128 tokens
    .venv/bin/python benchmarks/bench_generate.py --prompts 8 --new-tokens 64   # a quick look
    .venv/bin/python benchmarks/bench_generate.py --greedy --samples 1 --new-tokens 48 \
        --batch 32 --prompts 200                                 # `make demo`'s evaluation
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass

import torch

from prefalign.config import ModelSection
from prefalign.data.template import batch_token_ids, render_prompt
from prefalign.data.tokenizer import load_tokenizer
from prefalign.engine.forward.onednn import cpu_matmul
from prefalign.engine.models.load import load_base_model
from prefalign.engine.sampling import DecodeSettings, sample_prompts
from prefalign.engine.sampling.compare import generation_config
from prefalign.engine.sampling.tokens import pad_token_id, stop_token_ids
from prefalign.eval.prompts import default_prompts

MODEL = "smollm2-135m-instruct"


@dataclass
class Side:
    """One side's run: what it generated, how long it took, what its forwards read."""

    name: str
    seconds: float
    tokens: int
    sequences: int
    prefill_rows: int  # prompt rows run through a prefill forward (several new positions)
    decode_steps: int
    decode_rows: int  # rows summed over decode steps (finished rows kept in the batch count)
    step_bytes: float  # weights + KV cache read, summed over decode steps
    step_flops: float  # multiply-adds × 2, summed over decode steps

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8, help="prompts per batch, both sides")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--greedy", action="store_true",
                        help="argmax decoding (the evaluation's setting) instead of sampling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--cpu-matmul", choices=("auto", "onednn", "torch"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--sides", nargs="+", choices=("transformers", "prefalign"),
                        default=["transformers", "prefalign"])
    parser.add_argument("--json", default=None, help="also write the results here")
    return parser.parse_args()


def memory_bandwidth() -> float:
    """Bytes per second of a 1 GiB float32 copy (read + write), best of 5."""
    source = torch.ones(1 << 28)
    target = torch.empty_like(source)
    target.copy_(source)  # touch every page first
    best = min(_timed(lambda: target.copy_(source)) for _ in range(5))
    return 2 * source.numel() * 4 / best


def matmul_rate() -> float:
    """float32 multiply-adds × 2 per second of a 2048×2048 `linear`, best of 5."""
    x, w = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.nn.functional.linear(x, w)
    best = min(_timed(lambda: torch.nn.functional.linear(x, w)) for _ in range(5))
    return 2 * 2048**3 / best


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


class ForwardLog:
    """Records (rows, new positions, cache length) of every forward of the model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self._handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs) -> None:
        input_ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        self.calls.append((input_ids.shape[0], input_ids.shape[1], mask.shape[1]))

    def close(self) -> None:
        self._handle.remove()


def step_costs(model: torch.nn.Module, calls: list[tuple[int, int, int]]) -> dict[str, float]:
    """Bytes read and FLOPs of the decode steps (one new position per row)."""
    config = model.config
    element = next(model.parameters()).element_size()
    weight_bytes = sum(p.numel() for p in model.parameters()) * element
    kv_per_position = (2 * config.num_hidden_layers * config.num_key_value_heads
                       * (config.hidden_size // config.num_attention_heads) * element)
    matmul_params = sum(p.numel() for name, p in model.named_parameters()
                        if p.dim() == 2 and "embed_tokens" not in name)
    if config.tie_word_embeddings:
        matmul_params += model.get_output_embeddings().weight.numel()
    attention_width = config.num_hidden_layers * config.hidden_size  # q·k and p·v per position
    decode = [(rows, cached) for rows, new, cached in calls if new == 1]
    return {
        "decode_steps": len(decode),
        "decode_rows": sum(rows for rows, _ in decode),
        "prefill_rows": sum(rows for rows, new, _ in calls if new > 1),
        "step_bytes": sum(weight_bytes + rows * cached * kv_per_position
                          for rows, cached in decode),
        "step_flops": sum(2 * rows * (matmul_params + 2 * cached * attention_width)
                          for rows, cached in decode),
    }


def count_tokens(new_ids: list[int], stops: set[int]) -> int:
    end = next((i + 1 for i, token in enumerate(new_ids) if token in stops), None)
    return end if end is not None else len(new_ids)


def run_transformers(model, prompt_ids, settings, stops, pad_id) -> tuple[int, int]:
    config = generation_config(settings, stops, pad_id)
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    torch.manual_seed(settings.seed)
    tokens = sequences = 0
    for start in range(0, len(order), settings.batch_size):
        batch = [prompt_ids[i] for i in order[start : start + settings.batch_size]]
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), pad_id)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1
        with torch.inference_mode():
            output = model.generate(input_ids=input_ids, attention_mask=mask,
                                    generation_config=config)
        for new_ids in output[:, width:].tolist():
            tokens += count_tokens(new_ids, set(stops))
            sequences += 1
    return tokens, sequences


def run_prefalign(model, prompt_ids, settings, stops, pad_id) -> tuple[int, int]:
    tokens = sequences = 0
    for samples in sample_prompts(model, prompt_ids, settings, stops, pad_id=pad_id):
        tokens += sum(len(sample.token_ids) for sample in samples)
        sequences += len(samples)
    return tokens, sequences


def run_side(name, model, prompt_ids, settings, stops, pad_id) -> Side:
    runner = run_transformers if name == "transformers" else run_prefalign
    log = ForwardLog(model)
    start = time.perf_counter()
    tokens, sequences = runner(model, prompt_ids, settings, stops, pad_id)
    seconds = time.perf_counter() - start
    log.close()
    return Side(name, seconds, tokens, sequences, **step_costs(model, log.calls))


def report(sides: list[Side], bandwidth: float, flop_rate: float) -> list[dict]:
    rows = []
    print(f"\n{'side':<13} {'seconds':>8} {'tokens':>7} {'tok/s':>7} {'prefill rows':>12} "
          f"{'steps':>6} {'rows/step':>9} {'bw limit tok/s':>14} {'of it':>6} "
          f"{'flop limit tok/s':>16} {'of it':>6}")
    for side in sides:
        bandwidth_limit = side.tokens / (side.step_bytes / bandwidth)
        flop_limit = side.tokens / (side.step_flops / flop_rate)
        per_step = side.decode_rows / max(side.decode_steps, 1)
        print(f"{side.name:<13} {side.seconds:>8.1f} {side.tokens:>7} "
              f"{side.tokens_per_second:>7.1f} {side.prefill_rows:>12} {side.decode_steps:>6} "
              f"{per_step:>9.1f} {bandwidth_limit:>14.0f} "
              f"{side.tokens_per_second / bandwidth_limit:>6.1%} {flop_limit:>16.0f} "
              f"{side.tokens_per_second / flop_limit:>6.1%}")
        rows.append({**asdict(side), "tokens_per_second": side.tokens_per_second,
                     "bandwidth_limit_tokens_per_second": bandwidth_limit,
                     "flop_limit_tokens_per_second": flop_limit})
    if len(sides) == 2:
        print(f"\nprefalign / transformers tokens/s: "
              f"{sides[1].tokens_per_second / sides[0].tokens_per_second:.2f}x")
    return rows


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = DecodeSettings(do_sample=not args.greedy, temperature=args.temperature,
                              top_k=args.top_k,
                              top_p=args.top_p, max_new_tokens=args.new_tokens, seed=args.seed,
                              num_samples=args.samples, batch_size=args.batch)
    model = load_base_model(ModelSection(source=MODEL, dtype=args.dtype))
    tokenizer = load_tokenizer(MODEL)
    prompts = default_prompts(args.prompts // 2, args.prompts - args.prompts // 2, args.seed)
    prompt_ids = batch_token_ids(tokenizer, [render_prompt(tokenizer, p.messages)
                                             for p in prompts])
    stops, pad_id = stop_token_ids(tokenizer), pad_token_id(tokenizer)
    with cpu_matmul(args.cpu_matmul):
        bandwidth, flop_rate = memory_bandwidth(), matmul_rate()
        print(f"memory bandwidth {bandwidth / 1e9:.1f} GB/s, float32 linear "
              f"{flop_rate / 1e9:.0f} GFLOP/s, torch threads {torch.get_num_threads()}, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"{len(prompts)} prompts ({sum(map(len, prompt_ids)) / len(prompt_ids):.0f} "
              f"tokens on average) × {args.samples} samples × up to {args.new_tokens} tokens; "
              f"{settings.to_dict()}")
        sides = [run_side(name, model, prompt_ids, settings, stops, pad_id)
                 for name in args.sides]
    rows = report(sides, bandwidth, flop_rate)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"settings": settings.to_dict(), "dtype": args.dtype,
                       "cpu_matmul": args.cpu_matmul, "threads": torch.get_num_threads(),
                       "bandwidth_bytes_per_second": bandwidth, "flop_rate": flop_rate,
                       "cpu": platform.processor() or platform.machine(),
                       "load_average": os.getloadavg()[0], "sides": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
