"""`prefalign rm train | eval | score` end to end: help, a run, its evaluation and scores, exit
codes on bad input."""

from __future__ import annotations

import json

import pytest
import yaml

from prefalign.cli.main import main
from run_helpers import pair_rows, write_pairs
from tiny_models import tiny_model_dir


@pytest.mark.parametrize("command", [["rm"], ["rm", "train"], ["rm", "eval"], ["rm", "score"]])
def test_every_rm_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: prefalign rm" in capsys.readouterr().out


def test_train_eval_and_score(tmp_path, tiny_tokenizer, capsys):
    model_dir = tiny_model_dir(tmp_path, tiny_tokenizer)
    heldout = write_pairs(tmp_path / "eval.jsonl", rows=pair_rows(20)[12:])
    config_file = tmp_path / "rm.yaml"
    config_file.write_text(yaml.safe_dump({
        "run": {"name": "cli-rm", "output_dir": str(tmp_path / "runs")},
        "model": {"source": str(model_dir)},
        "data": {"train": [str(write_pairs(tmp_path / "train.jsonl", 12))],
                 "eval": [str(heldout)], "max_length": 64},
        "rm": {"centering": 0.01},
        "optim": {"lr": 1e-3},
        "train": {"batch_size": 2, "grad_accum": 2, "max_steps": 2, "threads": 1},
    }), encoding="utf-8")
    run_dir = tmp_path / "runs" / "cli-rm"
    assert main(["rm", "train", "-c", str(config_file)]) == 0
    assert json.loads((run_dir / "manifest.json").read_text())["method"] == "rm"
    capsys.readouterr()

    out = tmp_path / "ev"
    assert main(["rm", "eval", str(run_dir), "--pairs", str(heldout), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "reward accuracy" in printed and "length-balanced" in printed and "ECE" in printed
    assert (out / "report.html").is_file() and (out / "summary.md").is_file()

    rows = write_pairs(tmp_path / "rows.jsonl", rows=[{"prompt": "Hi", "response": "Hello"}])
    assert main(["rm", "score", str(run_dir), "--input", str(rows), "-o",
                 str(tmp_path / "scored.jsonl")]) == 0
    scored = json.loads((tmp_path / "scored.jsonl").read_text())
    assert isinstance(scored["score"], float) and scored["prompt"] == "Hi"

    assert main(["eval", str(run_dir), "--out", str(tmp_path / "wrong")]) == 2
    assert "prefalign rm eval" in capsys.readouterr().err


def test_bad_config_and_bad_rows_exit_with_a_message(tmp_path, capsys):
    config_file = tmp_path / "bad.yaml"
    config_file.write_text("loss: {name: ipo}\n", encoding="utf-8")
    assert main(["rm", "train", "-c", str(config_file)]) == 2
    assert "loss: a reward model" in capsys.readouterr().err
    assert main(["rm", "train", "rm.centering=-1", "--print-config"]) == 2
    assert "rm.centering" in capsys.readouterr().err
    assert main(["rm", "eval", str(tmp_path), "--pairs", "x.jsonl", "--out",
                 str(tmp_path / "o")]) == 2
    assert "not a run directory" in capsys.readouterr().err
