"""The run manifest: contents, atomic updates, outcomes, resumes, a missing git."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from prefalign.config import Config, config_from_dict
from prefalign.engine import manifest as manifest_module
from prefalign.engine.manifest import (
    code_version,
    finish_manifest,
    read_manifest,
    start_manifest,
    update_manifest,
)


def _sections() -> dict:
    return {
        "data": {"train": {"fingerprint": "abc", "pairs": 10}},
        "chat_template": {"text": "{{ x }}", "sha256": "00ff"},
        "model": {"source": Path("/models/tiny"), "weight_hash": "beef", "dtype": torch.float32},
        "reference": {"strategy": "frozen_copy"},
        "loss": {"name": "dpo", "params": {"beta": 0.1}},
        "seed": 0,
    }


def test_start_records_config_sections_and_environment(tmp_path):
    config = Config()
    written = start_manifest(tmp_path, config, **_sections())
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert written == on_disk
    assert on_disk["schema_version"] == 1
    assert on_disk["outcome"] == "running" and on_disk["finished_at"] is None
    assert on_disk["started_at"].endswith("+00:00")
    assert on_disk["config"] == config.to_dict()
    assert on_disk["model"] == {"source": "/models/tiny", "weight_hash": "beef",
                                "dtype": "torch.float32"}
    assert on_disk["chat_template"]["sha256"] == "00ff" and on_disk["seed"] == 0
    environment = on_disk["environment"]
    assert environment["libraries"]["torch"] == torch.__version__
    assert set(environment["libraries"]) >= {"torch", "transformers", "peft", "accelerate",
                                             "prefalign"}
    assert environment["python"] and environment["hostname"]
    assert environment["code"]["package"]
    assert not list(tmp_path.glob(".manifest.json.*"))  # no temp file left by the atomic write


def test_update_and_finish(tmp_path):
    start_manifest(tmp_path, Config(), **_sections())
    update_manifest(tmp_path, final={"kind": "adapter"}, best_step=3)
    done = finish_manifest(tmp_path, "early_stopped", steps=4, eval={"loss": float("nan")})
    assert done == read_manifest(tmp_path)
    assert done["outcome"] == "early_stopped" and done["finished_at"] is not None
    assert done["final"] == {"kind": "adapter"} and done["best_step"] == 3
    assert done["eval"] == {"loss": "nan"}  # strict JSON: non-finite floats as strings
    assert finish_manifest(tmp_path, "failed: NaN loss at step 4")["outcome"].startswith("failed")
    with pytest.raises(ValueError, match="outcome"):
        finish_manifest(tmp_path, "done")


def test_resume_keeps_history(tmp_path):
    config = Config()
    first = start_manifest(tmp_path, config, **_sections())
    finish_manifest(tmp_path, "interrupted")
    changed = config_from_dict({"optim": {"lr": 1e-5}})
    resumed = start_manifest(tmp_path, changed, resume_step=6, **_sections())
    assert resumed["started_at"] == first["started_at"]
    assert resumed["outcome"] == "running" and resumed["finished_at"] is None
    assert [r["from_step"] for r in resumed["resumes"]] == [6]
    assert resumed["resumes"][0]["config_changed"] is True
    assert resumed["config"]["optim"]["lr"] == 1e-5
    again = start_manifest(tmp_path, changed, resume_step=9, **_sections())
    assert [r["from_step"] for r in again["resumes"]] == [6, 9]
    assert "config_changed" not in again["resumes"][1]


def test_reserved_section_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="outcome"):
        start_manifest(tmp_path, Config(), outcome={"x": 1})


def test_code_version_from_this_checkout_or_package():
    """Run from the repository, the commit and dirty flag are recorded; otherwise None."""
    version = code_version()
    repo = Path(manifest_module.__file__).resolve().parents[3]
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "src/prefalign/__init__.py"],
                             cwd=repo, capture_output=True, check=False).returncode == 0
    if tracked:
        assert len(version["git_commit"]) == 40 and isinstance(version["git_dirty"], bool)
    else:
        assert version["git_commit"] is None


def test_missing_git_never_fails(tmp_path, monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(manifest_module.subprocess, "run", no_git)
    written = start_manifest(tmp_path, Config())
    assert written["environment"]["code"]["git_commit"] is None
    assert written["environment"]["code"]["package"]
