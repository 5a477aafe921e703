"""`prefalign data validate --sft`: the pairs' output and exit codes, for SFT files."""

from __future__ import annotations

import json

from prefalign.cli.main import main

GOOD = [
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
    {"prompt": "Name a colour.", "completion": "Red."},
]
BAD_ROLE = {"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello"}]}


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_valid_file_exits_zero_with_counts_and_fingerprint(tmp_path, capsys):
    chat = _write_jsonl(tmp_path / "chat.jsonl", GOOD[:1])
    pc = _write_jsonl(tmp_path / "pc.jsonl", GOOD[1:])
    assert main(["data", "validate", "--sft", str(chat), str(pc)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"2 record(s) read from {chat} [messages], {pc} [prompt_completion]; "
                      "2 conversation(s) valid (2 assistant turn(s)); 0 defect(s) in 0 record(s)")
    assert out[1].startswith("fingerprint: ") and len(out[1]) == len("fingerprint: ") + 64


def test_every_defect_is_printed_and_the_exit_code_is_one(tmp_path, capsys):
    path = _write_jsonl(tmp_path / "bad.jsonl", [GOOD[0], BAD_ROLE, {"messages": []}])
    assert main(["data", "validate", "--sft", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [
        f"{path}:2: messages[1].role: unknown role 'bot' (expected system, user or assistant)",
        f"{path}:3: messages: must not be empty",
    ]
    assert "1 conversation(s) valid" in out[2] and "2 defect(s) in 2 record(s)" in out[2]


def test_skip_writes_the_rejects_and_exits_zero(tmp_path, capsys):
    path = _write_jsonl(tmp_path / "bad.jsonl", [GOOD[0], BAD_ROLE])
    rejects = tmp_path / "rejects.jsonl"
    code = main(["data", "validate", "--sft", str(path), "--on-error", "skip",
                 "--rejects", str(rejects)])
    assert code == 0
    assert "warning: skipped 1 invalid record(s)" in capsys.readouterr().err
    (row,) = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    assert row["line"] == 2 and row["defects"][0]["field"] == "messages[1].role"


def test_preference_files_validate_as_their_chosen_side(capsys):
    assert main(["data", "validate", "--sft", "bundled:examples", "--format",
                 "accepted_rejected"]) == 0
    out = capsys.readouterr().out
    assert "[preference:accepted_rejected]; 14 conversation(s) valid (20 assistant turn(s))" in out


def test_missing_file_is_a_usage_error(tmp_path, capsys):
    assert main(["data", "validate", "--sft", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err
