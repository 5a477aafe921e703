"""Sample N responses to every prompt of a prompt file into a samples file that a restarted job
continues (see `samples_file`). A row: prompt_id, sample (0..N-1), text (special tokens
removed), tokens (generated tokens, the end-of-turn token included), finish_reason
(end_of_turn | length), the prompt as written, then the prompt row's other columns."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from prefalign.data.template import batch_token_ids, render_prompt
from prefalign.data.tokenizer import tokenizer_identity
from prefalign.engine.models.resolve import ResolvedModel
from prefalign.engine.sampling.decode import Sample, sample_prompts
from prefalign.engine.sampling.prompts import PromptRow, file_sha256
from prefalign.engine.sampling.samples_file import SamplesFile
from prefalign.engine.sampling.settings import DecodeSettings
from prefalign.engine.sampling.tokens import pad_token_id, stop_token_ids


@dataclass(frozen=True)
class JobSummary:
    """What a call did: prompts in the file, prompts already done before it, rows and tokens
    it wrote, and how long its sampling took."""

    path: Path
    prompts: int
    resumed: int
    rows: int
    tokens: int
    seconds: float


def job_identity(resolved: ResolvedModel, prompts_path: str | Path,
                 prompts: Sequence[PromptRow], settings: DecodeSettings) -> dict[str, Any]:
    """What decides the samples; a samples file is resumed only by a job with the same."""
    tokenizer = resolved.tokenizer
    tokenizer_id = tokenizer_identity(tokenizer)
    return {
        "model": {"weight_hash": resolved.description["weight_hash"],
                  "dtype": resolved.description["dtype"]},
        "chat_template": {"sha256": tokenizer_id["chat_template_sha256"],
                          "tokenizer_sha256": tokenizer_id["tokenizer_sha256"]},
        "settings": settings.token_settings(),
        "prompts": {"sha256": file_sha256(prompts_path), "count": len(prompts)},
        "stop_token_ids": stop_token_ids(tokenizer),
    }


def generate_file(resolved: ResolvedModel, prompts_path: str | Path,
                  prompts: Sequence[PromptRow], out: str | Path, settings: DecodeSettings, *,
                  progress: bool = True) -> JobSummary:
    """Sample `settings.num_samples` responses to every prompt not yet in `out`; append each
    prompt's rows as soon as its samples are done; mark the manifest finished at the end."""
    identity = job_identity(resolved, prompts_path, prompts, settings)
    details = {"model_source": {"source": resolved.description["source"],
                                "run": resolved.description["run"]},
               "chat_template_text": resolved.tokenizer.chat_template,
               "prompts_file": str(prompts_path), "batch_size": settings.batch_size}
    samples_file = SamplesFile.open(out, identity, details)
    try:
        rows, tokens, seconds = _sample_into(resolved, prompts, samples_file, settings, progress)
        samples_file.finish(rows=len(prompts) * settings.num_samples)
    finally:
        samples_file.close()
    return JobSummary(Path(out), len(prompts), samples_file.resumed, rows, tokens, seconds)


def _sample_into(resolved: ResolvedModel, prompts: Sequence[PromptRow],
                 samples_file: SamplesFile, settings: DecodeSettings,
                 progress: bool) -> tuple[int, int, float]:
    tokenizer = resolved.tokenizer
    todo = [row for row in prompts if row.id not in samples_file.done]
    prompt_ids = batch_token_ids(tokenizer, [render_prompt(tokenizer, row.messages)
                                             for row in todo])
    rows = tokens = 0
    start = time.perf_counter()
    with tqdm(total=len(prompts), initial=len(prompts) - len(todo), unit="prompt",
              dynamic_ncols=True, disable=not progress, desc="generate") as bar:
        for samples in sample_prompts(resolved.model, prompt_ids, settings,
                                      stop_token_ids(tokenizer), pad_id=pad_token_id(tokenizer),
                                      keys=[row.id for row in todo]):
            prompt = todo[samples[0].prompt]
            samples_file.append([sample_row(prompt, sample, tokenizer) for sample in samples])
            rows += len(samples)
            tokens += sum(len(sample.token_ids) for sample in samples)
            bar.update(1)
            bar.set_postfix_str(f"{tokens / (time.perf_counter() - start):.0f} tok/s")
    return rows, tokens, time.perf_counter() - start


def sample_row(prompt: PromptRow, sample: Sample, tokenizer: Any) -> dict[str, Any]:
    return {"prompt_id": prompt.id, "sample": sample.sample,
            "text": tokenizer.decode(sample.token_ids, skip_special_tokens=True),
            "tokens": len(sample.token_ids), "finish_reason": sample.finish_reason,
            "prompt": prompt.prompt, **prompt.columns}
