"""Sampling a prompt file into a samples file: rows and manifest, the same job gives the same
samples, and an interrupted job continues without losing or duplicating a prompt."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from prefalign.data.types import DataError
from prefalign.engine.models.load import weight_hash
from prefalign.engine.models.resolve import load_model_or_run
from prefalign.engine.sampling import DecodeSettings
from prefalign.engine.sampling.job import generate_file
from prefalign.engine.sampling.prompts import read_prompt_file
from prefalign.engine.sampling.samples_file import (
    SamplesFile,
    SamplesFileError,
    manifest_path,
    recover,
)
from tiny_models import tiny_model_dir

SETTINGS = DecodeSettings(do_sample=True, temperature=1.2, top_k=50, max_new_tokens=8,
                          num_samples=3, batch_size=2, seed=4)
TOPICS = ["the sea", "a cat", "bicycles", "France", "eggs", "books", "the weather", "foxes"]


def write_prompts(path: Path, count: int = 8) -> Path:
    rows = [{"id": f"q{i}", "prompt": f"Tell me about {TOPICS[i % len(TOPICS)]} ({i}).",
             "topic": TOPICS[i % len(TOPICS)]} for i in range(count)]
    rows[1] = {"prompt": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "Why is the sea salty?"}]}
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_key(rows: list[dict]) -> dict[tuple[str, int], dict]:
    keyed = {(row["prompt_id"], row["sample"]): row for row in rows}
    assert len(keyed) == len(rows), "a (prompt, sample) row is duplicated"
    return keyed


@pytest.fixture(scope="module")
def resolved(tmp_path_factory, tiny_tokenizer):
    directory = tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer,
                               initializer_range=0.2)
    return load_model_or_run(str(directory))


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    return write_prompts(tmp_path_factory.mktemp("prompts") / "prompts.jsonl")


@pytest.fixture(scope="module")
def reference_out(resolved, prompts_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "samples.jsonl"
    run_job(resolved, prompts_file, out)
    return out


@pytest.fixture(scope="module")
def reference_rows(reference_out) -> list[dict]:
    return read_rows(reference_out)


def run_job(resolved, prompts_file: Path, out: Path, settings: DecodeSettings = SETTINGS):
    return generate_file(resolved, prompts_file, read_prompt_file(prompts_file), out, settings,
                         progress=False)


def test_rows_and_manifest(resolved, prompts_file, reference_out, reference_rows) -> None:
    rows = by_key(reference_rows)
    assert set(rows) == {(f"q{i}" if i != 1 else "prompts:2", s) for i in range(8)
                         for s in range(3)}
    first = rows["q0", 0]
    assert set(first) == {"prompt_id", "sample", "text", "tokens", "finish_reason", "prompt",
                          "topic"}
    assert first["prompt"] == "Tell me about the sea (0)." and first["topic"] == "the sea"
    assert rows["prompts:2", 0]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert all(row["finish_reason"] in ("end_of_turn", "length") for row in reference_rows)
    assert all(1 <= row["tokens"] <= 8 for row in reference_rows)
    manifest = json.loads(manifest_path(reference_out).read_text())
    template = resolved.tokenizer.chat_template
    assert manifest["model"]["weight_hash"] == weight_hash(resolved.model)
    assert manifest["chat_template"]["sha256"] == hashlib.sha256(template.encode()).hexdigest()
    assert manifest["chat_template_text"] == template
    assert manifest["settings"] == SETTINGS.token_settings()
    assert manifest["prompts"] == {"sha256": hashlib.sha256(prompts_file.read_bytes()).hexdigest(),
                                   "count": 8}
    assert manifest["finished"] is not None and manifest["rows"] == 24


def test_the_same_job_gives_the_same_samples(resolved, prompts_file, reference_rows,
                                             tmp_path) -> None:
    """Another batch size changes the speed only: the samples are the same."""
    out = tmp_path / "again.jsonl"
    run_job(resolved, prompts_file, out, DecodeSettings(**{**SETTINGS.to_dict(),
                                                           "batch_size": 5}))
    assert by_key(read_rows(out)) == by_key(reference_rows)
    other = tmp_path / "other-seed.jsonl"
    run_job(resolved, prompts_file, other, DecodeSettings(**{**SETTINGS.to_dict(), "seed": 5}))
    assert by_key(read_rows(other)) != by_key(reference_rows)


def test_restart_after_a_kill_mid_write_loses_and_repeats_nothing(
        resolved, prompts_file, reference_rows, tmp_path, monkeypatch) -> None:
    """The third prompt's write is cut half-way (as by a kill) and the job stops; the same job
    run again keeps the first two prompts' rows byte for byte, cuts the torn rows off and writes
    the other six prompts: every (prompt, sample) once, as an uninterrupted job wrote them."""
    out = tmp_path / "samples.jsonl"
    append = SamplesFile.append

    def torn_third_write(self, rows):
        if len(self.done) == 2:
            data = "".join(json.dumps(row) + "\n" for row in rows).encode()
            self._handle.write(data[: len(data) // 2])
            self._handle.flush()
            raise KeyboardInterrupt
        append(self, rows)

    monkeypatch.setattr(SamplesFile, "append", torn_third_write)
    with pytest.raises(KeyboardInterrupt):
        run_job(resolved, prompts_file, out)
    monkeypatch.setattr(SamplesFile, "append", append)
    kept = out.read_bytes()
    torn = read_rows_prefix(kept)[6:]  # two whole prompts, then the third's first row or none
    assert len(torn) < 3 and not kept.endswith(b"\n")
    assert json.loads(manifest_path(out).read_text())["finished"] is None
    summary = run_job(resolved, prompts_file, out)
    assert (summary.resumed, summary.rows) == (2, 18)
    final = out.read_bytes()
    assert final.startswith(b"".join(kept.splitlines(keepends=True)[:6]))
    assert by_key(read_rows(out)) == by_key(reference_rows)
    again = run_job(resolved, prompts_file, out)  # a finished file is left as it is
    assert (again.resumed, again.rows) == (8, 0) and out.read_bytes() == final


def read_rows_prefix(data: bytes) -> list[dict]:
    """The whole JSON lines at the start of `data`, up to the first torn one."""
    rows = []
    for line in data.splitlines(keepends=True):
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    return rows


def test_resuming_a_different_job_is_refused(resolved, prompts_file, tmp_path,
                                             tiny_tokenizer) -> None:
    out = tmp_path / "samples.jsonl"
    run_job(resolved, prompts_file, out)
    before = out.read_bytes()
    hotter = DecodeSettings(**{**SETTINGS.to_dict(), "temperature": 1.5})
    with pytest.raises(SamplesFileError, match=r"settings.temperature: 1.2 in the manifest, 1.5"):
        run_job(resolved, prompts_file, out, hotter)
    edited = write_prompts(tmp_path / "edited.jsonl", count=7)
    with pytest.raises(SamplesFileError, match=r"prompts.sha256: .*\n  prompts.count: 8 in"):
        run_job(resolved, edited, out)
    other_dir = tiny_model_dir(tmp_path / "other", tiny_tokenizer, seed=1)
    with pytest.raises(SamplesFileError, match=r"model.weight_hash"):
        run_job(load_model_or_run(str(other_dir)), prompts_file, out)
    assert out.read_bytes() == before


def test_an_output_file_without_manifest_is_refused(resolved, prompts_file, tmp_path) -> None:
    out = tmp_path / "samples.jsonl"
    out.write_text('{"prompt_id": "q0"}\n')
    with pytest.raises(SamplesFileError, match="has no manifest"):
        run_job(resolved, prompts_file, out)


def test_recover_cuts_a_torn_tail_and_rejects_damage(tmp_path) -> None:
    path = tmp_path / "samples.jsonl"
    whole = '{"prompt_id": "a", "sample": 0}\n{"prompt_id": "a", "sample": 1}\n'
    path.write_text(whole + '{"prompt_id": "b", "sample": 0}\n{"prompt_id": "b", "sa')
    assert recover(path, num_samples=2) == {"a"}
    assert path.read_text() == whole
    path.write_text('{"prompt_id": "a"}\nnot json\n{"prompt_id": "a"}\n')
    with pytest.raises(SamplesFileError, match=r"samples.jsonl:2: not a sample row"):
        recover(path, num_samples=2)
    path.write_text('{"prompt_id": "a"}\n' * 3)
    with pytest.raises(SamplesFileError, match=r"samples.jsonl:3: more than 2 rows"):
        recover(path, num_samples=2)


def test_prompt_file_defects_name_file_line_and_field(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    rows = ['{"prompt": "fine", "id": "x"}', '{"id": "y"}', '{"prompt": 3}',
            '{"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", '
            '"content": "hello"}]}', '{"prompt": "again", "id": "x"}', '{"prompt": "ok", '
            '"text": "taken"}', "{not json", '{"prompt": "  "}', '{"prompt": "a", "id": 1.5}']
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as caught:
        read_prompt_file(path)
    found = {(d.line, d.field) for d in caught.value.defects}
    assert {(2, "prompt"), (3, "prompt"), (4, "prompt"), (5, "id"), (6, "text"), (8, "prompt"),
            (9, "id")} <= found
    assert any(d.line == 7 for d in caught.value.defects)
    assert f"{path}:5: id: duplicate id 'x' (first on line 1)" in str(caught.value)
    with pytest.raises(FileNotFoundError):
        read_prompt_file(tmp_path / "missing.jsonl")
