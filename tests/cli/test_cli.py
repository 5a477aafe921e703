"""The `prefalign` command end to end: exit codes, messages, and nothing written on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from prefalign.cli.main import main

GOOD = [
    {"Template": ["CUSTOM"], "User": ["Hi?"], "Accepted": ["Hello! How can I help?"], "Rejected": ["What."]},
    {"Template": ["Be kind."], "User": ["Q1", "Q2"], "Accepted": ["A1", "good"], "Rejected": ["A1", "bad"]},
]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("command", [[], ["data"], ["data", "validate"], ["data", "audit"], ["verify"],
                                     ["data", "preview"], ["data", "convert"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: prefalign" in capsys.readouterr().out


def test_console_script_runs():
    done = subprocess.run([sys.executable, "-m", "prefalign.cli.main", "data", "--help"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "validate" in done.stdout


def test_validate_good_file_exits_zero(tmp_path, capsys):
    path = _write_jsonl(tmp_path / "good.jsonl", GOOD)
    assert main(["data", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 pair(s) valid" in out and "fingerprint: " in out


def test_validate_reports_every_defect_and_exits_one(tmp_path, capsys):
    bad = [GOOD[0], {"Template": "CUSTOM", "User": ["a"], "Accepted": ["b"], "Rejected": ["c"]},
           {"Template": ["CUSTOM"], "User": ["a", "b"], "Accepted": ["x"], "Rejected": ["y"]}]
    path = _write_jsonl(tmp_path / "bad.jsonl", bad)
    assert main(["data", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:2: Template:" in out
    assert f"{path}:3: " in out
    assert "2 defect(s)" in out or "defect(s) in 2 record(s)" in out


def test_validate_skip_writes_side_file(tmp_path, capsys):
    bad = [GOOD[0], {"Template": ["CUSTOM"], "User": ["a"], "Accepted": [" "], "Rejected": ["c"]}]
    path = _write_jsonl(tmp_path / "bad.jsonl", bad)
    rejects = tmp_path / "rejects.jsonl"
    assert main(["data", "validate", str(path), "--on-error", "skip", "--rejects", str(rejects)]) == 0
    err = capsys.readouterr().err
    assert "skipped 1" in err
    lines = rejects.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["line"] == 2


def test_convert_writes_nothing_when_invalid(tmp_path, capsys):
    path = _write_jsonl(tmp_path / "bad.jsonl", [GOOD[0], {"Template": ["CUSTOM"]}])
    out = tmp_path / "out.jsonl"
    out.write_text("previous content\n", encoding="utf-8")
    assert main(["data", "convert", str(path), "--to", "trl", "-o", str(out)]) == 1
    assert out.read_text(encoding="utf-8") == "previous content\n"
    assert not list(tmp_path.glob(".out.jsonl.*"))


def test_convert_round_trip(tmp_path):
    src = _write_jsonl(tmp_path / "ar.jsonl", GOOD)
    out = tmp_path / "trl.jsonl"
    assert main(["data", "convert", str(src), "--to", "trl", "-o", str(out)]) == 0
    back = tmp_path / "back.jsonl"
    assert main(["data", "convert", str(out), "--to", "accepted_rejected", "-o", str(back)]) == 0
    from prefalign.data.load import load_pairs

    assert load_pairs([src]).pairs == load_pairs([back]).pairs


def test_audit_json_and_strict(tmp_path, capsys):
    rows = [{"prompt": f"q{i}", "chosen": "long answer " * 3, "rejected": "short"} for i in range(5)]
    path = _write_jsonl(tmp_path / "biased.jsonl", rows)
    report = tmp_path / "audit.json"
    assert main(["data", "audit", str(path), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["length_bias"]["frac_chosen_longer"] == 1.0
    assert main(["data", "audit", str(path), "--strict"]) == 1
    assert "FLAG: length bias" in capsys.readouterr().out


def test_audit_leakage_against_eval(tmp_path, capsys):
    train = _write_jsonl(tmp_path / "train.jsonl", GOOD)
    evaluation = _write_jsonl(tmp_path / "eval.jsonl", GOOD[:1])
    assert main(["data", "audit", str(train), "--eval", str(evaluation), "--strict"]) == 1
    assert "leakage: 1 training pair" in capsys.readouterr().out


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "validate", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err


def test_bundled_data_validates(capsys):
    code = main(["data", "validate", "bundled:hh-harmless-heldout", "bundled:examples"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "0 defect(s)" in out
