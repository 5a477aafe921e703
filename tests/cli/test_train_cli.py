"""`prefalign train`: help, the resolved config, and exit 2 with a clear message on a bad config."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from prefalign.cli.main import main
from prefalign.config import load_config


def test_train_help_documents_config_overrides_and_resume(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: prefalign train")
    for text in ("-c CONFIG.yaml", "section.key=value", "--resume", "--print-config", "--dry-run",
                 "Without -c", "built-in defaults", "exit codes"):
        assert text in out


def test_top_level_help_lists_train(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "train" in capsys.readouterr().out


def test_help_does_not_import_torch():
    """`prefalign --help` stays fast: the training stack is imported only to train."""
    code = "import sys, prefalign.cli.main; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_print_config_applies_overrides_and_reads_back(tmp_path, capsys):
    config_file = tmp_path / "base.yaml"
    config_file.write_text("run:\n  name: base\nlora:\n  enabled: true\n", encoding="utf-8")
    code = main(["train", "-c", str(config_file), "optim.lr=1e-5", "loss.params.beta=0.5",
                 "lora.target_modules=[q_proj,k_proj]", "--print-config"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    printed = yaml.safe_load(out)
    assert printed["run"]["name"] == "base" and printed["optim"]["lr"] == 1e-5
    assert printed["loss"]["params"]["beta"] == 0.5
    assert printed["lora"]["target_modules"] == ["q_proj", "k_proj"]
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(out, encoding="utf-8")
    assert load_config(resolved) == load_config(config_file, ["optim.lr=1e-5", "loss.params.beta=0.5",
                                                              "lora.target_modules=[q_proj,k_proj]"])


def test_dry_run_without_a_file_prints_the_defaults(capsys):
    assert main(["train", "--dry-run"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["source"] == "smollm2-135m-instruct"
    assert printed["loss"] == {"name": "dpo", "params": {"beta": 0.1, "label_smoothing": 0.0,
                                                         "length_normalized": False}}


def test_unknown_key_exits_2_with_a_suggestion(capsys):
    assert main(["train", "optim.lrr=1e-5", "--print-config"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "optim.lrr: unknown key; did you mean 'lr'?" in err and "Traceback" not in err


def test_invalid_value_exits_2_naming_the_key(tmp_path, capsys):
    config_file = tmp_path / "bad.yaml"
    config_file.write_text("reference:\n  strategy: adapter_off\n", encoding="utf-8")
    assert main(["train", "-c", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert f"{config_file}: reference.strategy: adapter_off needs lora.enabled: true" in err


def test_missing_config_file_exits_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["train", "-c", str(missing)]) == 2
    assert f"{missing}: no such config file" in capsys.readouterr().err


def test_bad_config_through_the_console_entry_point_has_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "prefalign.cli.main", "train", "-c",
                           str(tmp_path / "nope.yaml")], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "no such config file" in done.stderr and "Traceback" not in done.stderr


# end to end -------------------------------------------------------------------------------------

def test_train_runs_refuses_to_overwrite_and_resumes(tmp_path, tiny_tokenizer, capsys):
    """A 2-step LoRA run on a tiny Llama, then a refusal without --resume, then 1 more step."""
    import json

    from run_helpers import write_pairs
    from tiny_models import tiny_model_dir

    model_dir = tiny_model_dir(tmp_path, tiny_tokenizer)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump({
        "run": {"name": "cli", "output_dir": str(tmp_path / "runs")},
        "model": {"source": str(model_dir)},
        "lora": {"enabled": True, "r": 4},
        "reference": {"strategy": "adapter_off"},
        "data": {"train": [str(write_pairs(tmp_path / "train.jsonl", 8))],
                 "eval": [str(write_pairs(tmp_path / "eval.jsonl", 4))], "max_length": 64},
        "optim": {"lr": 1e-3},
        "train": {"batch_size": 2, "grad_accum": 2, "max_steps": 2, "save_every": 1,
                  "threads": 1},
    }), encoding="utf-8")
    run_dir = tmp_path / "runs" / "cli"

    assert main(["train", "-c", str(config_file)]) == 0
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["outcome"] == "completed" and manifest["steps"] == 2
    assert manifest["config"] == load_config(config_file).to_dict()
    assert (run_dir / "final").is_dir()
    capsys.readouterr()

    assert main(["train", "-c", str(config_file)]) == 2
    assert "already holds a run" in capsys.readouterr().err

    assert main(["train", "-c", str(config_file), "train.max_steps=3", "--resume"]) == 0
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["outcome"] == "completed" and manifest["steps"] == 3
