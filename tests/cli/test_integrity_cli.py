"""`prefalign verify` and the one-line errors: what each command prints and exits with when a
file fails verification, the disk is full or a path cannot be written (exit codes as --help
and the README document them: 1 invalid data or a reported failure, 2 a usage error)."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile

import pytest
import yaml

from prefalign.cli.main import main
from prefalign.trainers.dpo.train import train
from run_helpers import tiny_config, write_pairs
from tiny_models import tiny_model_dir


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_tokenizer):
    """A finished 2-step run with checkpoints at steps 1 and 2 (copy it before damaging it)."""
    tmp_path = tmp_path_factory.mktemp("run")
    config = tiny_config(tmp_path, tiny_model_dir(tmp_path, tiny_tokenizer),
                         data={"eval": []}, train={"max_steps": 2, "save_every": 1})
    return train(config).run_dir


def _copy(run_dir, tmp_path):
    shutil.copytree(run_dir, tmp_path / "run")
    return tmp_path / "run"


def _flip(path, offset=-32):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_an_intact_run_exits_0(finished, capsys):
    assert main(["verify", str(finished)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{finished}:"
    assert [line.split()[:2] for line in lines[1:5]] == [
        ["OK", "manifest.json"], ["OK", "checkpoints/step-1"], ["OK", "checkpoints/step-2"],
        ["OK", "final"]]
    assert lines[-2:] == ["--resume continues from: checkpoints/step-2", "4 of 4 intact"]


def test_verify_names_each_damaged_file_and_exits_1(finished, tmp_path, capsys):
    run_dir = _copy(finished, tmp_path)
    _flip(run_dir / "checkpoints" / "step-2" / "optimizer.pt", offset=2000)
    _flip(run_dir / "final" / "model.safetensors")
    assert main(["verify", str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert "OK      checkpoints/step-1" in out
    assert "FAILED  checkpoints/step-2  optimizer.pt fails its sha256 check" in out
    assert "FAILED  final               model.safetensors fails its sha256 check" in out
    assert out.endswith("--resume continues from: checkpoints/step-1\n2 of 4 intact, 2 FAILED\n")


def test_verify_of_a_directory_that_is_no_run_exits_2(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"prefalign: error: {tmp_path}: not a run directory (no "
                                       "manifest.json, no checkpoints/)\n")


def test_a_damaged_final_model_is_refused_by_probe_in_one_line(finished, tmp_path, capsys):
    run_dir = _copy(finished, tmp_path)
    _flip(run_dir / "final" / "model.safetensors")
    assert main(["probe", str(run_dir), "--prompt", "Hi", "--response", "Hello"]) == 1
    assert capsys.readouterr().err == (
        f"prefalign: error: {run_dir}/final: model.safetensors fails its sha256 check (damaged "
        "in place; the size is unchanged), so it is not used (`prefalign verify RUN_DIR` lists "
        "what is intact)\n")


def test_a_damaged_manifest_is_refused_by_eval_in_one_line(finished, tmp_path, capsys):
    run_dir = _copy(finished, tmp_path)
    (run_dir / "manifest.json").write_text("{\"outcome\": ", encoding="utf-8")
    assert main(["eval", str(run_dir), "--out", str(tmp_path / "out"), "--prompts", "none"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"prefalign: error: {run_dir}/manifest.json is not readable JSON")
    assert len(err.splitlines()) == 1


def test_train_exit_codes_match_its_help(tmp_path, tiny_tokenizer, capsys):
    """Invalid data exits 1 and a missing data file 2, as `prefalign train --help` says."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "1 invalid data (FILE:LINE: FIELD: message), or the run stopped on an error" in help_text
    assert "2 an invalid config, an unknown key, a missing file, or a path that cannot be" \
        in help_text
    config = tiny_config(tmp_path, tiny_model_dir(tmp_path, tiny_tokenizer))
    for name, text, code in (("empty", "", 1), ("broken", "{\"prompt\": \"x\", \n", 1),
                             ("missing", None, 2)):
        data = tmp_path / f"{name}.jsonl"
        if text is not None:
            data.write_text(text, encoding="utf-8")
        raw = config.to_dict()
        raw["run"]["name"], raw["data"]["train"] = name, [str(data)]
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
        assert main(["train", "-c", str(tmp_path / f"{name}.yaml")]) == code, name
        assert str(data) in capsys.readouterr().err, name


def test_a_full_disk_while_converting_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    """The output's fsync reports ENOSPC (as a full NFS share does): one line naming the
    output, exit 1, and no temp file left beside it."""
    source = write_pairs(tmp_path / "in.jsonl", 4)
    out = tmp_path / "out" / "converted.jsonl"
    real_fsync = os.fsync

    def full(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(out.parent)):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to tell which file is synced")
    monkeypatch.setattr(os, "fsync", full)
    assert main(["data", "convert", str(source), "--to", "trl", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"prefalign: error: no space left on device writing {out}")
    assert len(err.splitlines()) == 1 and list(out.parent.iterdir()) == []


def test_a_denied_write_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    """Permission denied creating the output (as for a directory the user cannot write; root
    is never denied, so the refusal is injected where the temp file is made)."""
    source = write_pairs(tmp_path / "in.jsonl", 4)
    out = tmp_path / "converted.jsonl"
    real_mkstemp = tempfile.mkstemp

    def denied(*args, **kwargs):
        if kwargs.get("dir") == out.parent:
            raise PermissionError(errno.EACCES, "Permission denied", str(out.parent))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    assert main(["data", "convert", str(source), "--to", "trl", "-o", str(out)]) == 2
    assert capsys.readouterr().err == f"prefalign: error: permission denied writing {out}\n"
