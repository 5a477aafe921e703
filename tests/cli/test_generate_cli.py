"""`prefalign generate` from the command line: output, exit codes, a run directory as the
model, and a job killed for real (SIGKILL) and run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import prefalign
from prefalign.cli.main import main
from prefalign.trainers.dpo.train import train
from run_helpers import tiny_config
from tiny_models import tiny_model_dir


def write_prompts(path: Path, count: int) -> Path:
    rows = [{"id": f"q{i}", "prompt": f"Tell me about the number {i}."} for i in range(count)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def rows_by_key(path: Path) -> dict[tuple[str, int], dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    keyed = {(row["prompt_id"], row["sample"]): row for row in rows}
    assert len(keyed) == len(rows), "a (prompt, sample) row is duplicated"
    return keyed


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer,
                          initializer_range=0.2)


def generate(model: Path | str, prompts: Path, out: Path, *extra: str) -> int:
    return main(["generate", str(model), "--prompts", str(prompts), "-o", str(out),
                 "--quiet", *extra])


def test_writes_rows_and_says_what_it_did(model_dir, tmp_path, capsys) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 3)
    out = tmp_path / "samples.jsonl"
    assert generate(model_dir, prompts, out, "-n", "2", "--max-new-tokens", "5",
                    "--top-k", "20") == 0
    assert "3 prompts × 2 samples" in capsys.readouterr().out
    assert len(rows_by_key(out)) == 6
    manifest = json.loads((tmp_path / "samples.jsonl.manifest.json").read_text())
    assert manifest["settings"]["top_k"] == 20 and manifest["settings"]["do_sample"]
    assert generate(model_dir, prompts, out, "-n", "2", "--max-new-tokens", "5",
                    "--top-k", "20") == 0
    assert "3 of them done before; wrote 0 rows" in capsys.readouterr().out


def test_greedy_samples_are_identical(model_dir, tmp_path) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2)
    out = tmp_path / "greedy.jsonl"
    assert generate(model_dir, prompts, out, "--greedy", "-n", "2",
                    "--max-new-tokens", "6") == 0
    rows = rows_by_key(out)
    assert rows["q0", 0]["text"] == rows["q0", 1]["text"]


def test_exit_codes(model_dir, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": 7}\n')
    out = tmp_path / "samples.jsonl"
    assert generate(model_dir, bad, out) == 1
    assert f"{bad}:2: prompt: expected a string or a list of messages" in capsys.readouterr().err
    assert not out.exists()  # nothing half-written
    assert generate(model_dir, tmp_path / "missing.jsonl", out) == 2
    assert "no such prompt file" in capsys.readouterr().err
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2)
    assert generate(model_dir, prompts, out, "--temperature", "0") == 2
    assert "decoding.temperature" in capsys.readouterr().err
    assert generate(tmp_path / "no-model", prompts, out) == 2
    assert generate(model_dir, prompts, out, "--max-new-tokens", "3") == 0
    assert generate(model_dir, prompts, out, "--max-new-tokens", "4") == 2
    assert "settings.max_new_tokens: 3 in the manifest, 4 now" in capsys.readouterr().err


def test_a_run_directory_samples_its_final_model(tmp_path, model_dir, capsys) -> None:
    config = tiny_config(tmp_path, model_dir, optim={"lr": 5e-2},
                         train={"max_steps": 2, "eval_every": 0})
    run_dir = train(config).run_dir
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2)
    out = tmp_path / "samples.jsonl"
    assert generate(run_dir, prompts, out, "--max-new-tokens", "4") == 0
    manifest = json.loads((tmp_path / "samples.jsonl.manifest.json").read_text())
    assert manifest["model_source"] == {"source": str(run_dir / "final"), "run": str(run_dir)}
    base = tmp_path / "base.jsonl"
    assert generate(model_dir, prompts, base, "--max-new-tokens", "4") == 0
    base_manifest = json.loads((tmp_path / "base.jsonl.manifest.json").read_text())
    assert manifest["model"]["weight_hash"] != base_manifest["model"]["weight_hash"]


@pytest.mark.slow
def test_a_killed_job_continues_without_loss_or_duplication(model_dir, tmp_path) -> None:
    """SIGKILL a real `prefalign generate` process after some prompts are written (wherever it
    is, perhaps mid-write); the same command again (with another batch size, which changes the
    speed only) completes the file, which then holds every (prompt, sample) once, exactly as an
    uninterrupted job writes them. The killed job decodes one prompt at a time, to be slow."""
    prompts = write_prompts(tmp_path / "prompts.jsonl", 100)
    options = ["-n", "2", "--max-new-tokens", "16", "--seed", "3"]
    reference = tmp_path / "reference.jsonl"
    assert generate(model_dir, prompts, reference, *options) == 0
    out = tmp_path / "samples.jsonl"
    command = [sys.executable, "-m", "prefalign.cli.main", "generate", str(model_dir),
               "--prompts", str(prompts), "-o", str(out), "--quiet", "--batch-size", "1",
               *options]
    env = {**os.environ, "PYTHONPATH": str(Path(prefalign.__file__).parents[1])}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 10:
                break
            time.sleep(0.01)
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    written = out.read_bytes().count(b"\n")
    assert 10 <= written < 200  # killed part-way
    assert generate(model_dir, prompts, out, *options) == 0
    assert rows_by_key(out) == rows_by_key(reference)


@pytest.mark.parametrize("command", ["generate", "chat"])
def test_help_gives_examples_and_exit_codes(command, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: prefalign {command}" in text and "examples:" in text
    assert "exit codes:" in text
