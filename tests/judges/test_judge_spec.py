"""`--judge` specs: each form parses, weights, unknown specs, and module:function judges called
the way TRL calls reward functions (from an importable module and from a .py file)."""

from __future__ import annotations

import hashlib
import re
import sys

import pytest

from prefalign.data.types import Message
from prefalign.judges.base import Completions, JudgeError, judge_scores
from prefalign.judges.spec import JudgeSpec, load_judge, load_panel, parse_judge_spec

REWARDS = '''
def length(prompts, completions, **columns):
    """TRL conversational form: completions[i] = [{"role": "assistant", "content": ...}]."""
    return [float(len(c[0]["content"])) for c in completions]

def kind_echo(prompts, completions, kind, category, prompt_id, **rest):
    return [float(k == "harmful") + (10.0 if c is None else 0.0) for k, c in zip(kind, category)]

def prompt_words(prompts, completions, **columns):
    return [float(len(p[-1]["content"].split())) for p in prompts]

def broken(prompts, completions, **columns):
    raise RuntimeError("model server down")

def too_few(prompts, completions, **columns):
    return [1.0]
'''


@pytest.mark.parametrize(("text", "expected"), [
    ("refusal", JudgeSpec("refusal", None, 1.0)),
    ("refusal@2", JudgeSpec("refusal", None, 2.0)),
    ("rm:runs/rm-helpful@0.5", JudgeSpec("rm", "runs/rm-helpful", 0.5)),
    ("implicit:runs/dpo", JudgeSpec("implicit", "runs/dpo", 1.0)),
    ("my_rewards:length@-1", JudgeSpec("module", "my_rewards:length", -1.0)),
    ("judges/len.py:length", JudgeSpec("module", "judges/len.py:length", 1.0)),
])
def test_specs_parse(text, expected):
    assert parse_judge_spec(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("refusals", "unknown judge; expected rm:RUN_DIR | implicit:RUN_DIR | refusal"),
    ("rm:", "rm: needs a run directory"),
    ("refusal@heavy", "the weight after @ must be a number, got 'heavy'"),
    ("refusal@nan", "the weight must be finite"),
    (":length", "unknown judge"),
])
def test_bad_specs(text, message):
    with pytest.raises(JudgeError, match=message.replace("|", r"\|")):
        parse_judge_spec(text)


def test_panel_checks_every_spec_before_loading(tmp_path):
    missing = tmp_path / "no-such-run"
    with pytest.raises(JudgeError, match="unknown judge"):  # the rm judge is never loaded
        load_panel([f"rm:{missing}", "nonsense"])
    with pytest.raises(JudgeError, match="the safety judge takes no weight"):
        load_panel(["refusal"], combine="piecewise", safety=f"rm:{missing}@2", threshold=0.1)
    with pytest.raises(JudgeError, match=f"judge rm:{missing}: no reward model there"):
        load_panel([f"rm:{missing}"])


def _completions() -> Completions:
    return Completions(
        [(Message("user", "how are you"),), (Message("system", "s"), Message("user", "go"))],
        ["fine", "no way"],
        [{"kind": "harmful", "category": "x", "prompt_id": "a"},
         {"kind": "benign", "prompt_id": "b"}])


@pytest.fixture
def rewards_file(tmp_path):
    path = tmp_path / "rewards.py"
    path.write_text(REWARDS, encoding="utf-8")
    return path


def test_callable_judge_from_a_file(rewards_file):
    judge = load_judge(parse_judge_spec(f"{rewards_file}:length"))
    assert judge.id == f"{rewards_file}:length"
    assert judge.hash == hashlib.sha256(rewards_file.read_bytes()).hexdigest()
    assert judge_scores(judge, _completions()) == [4.0, 6.0]
    columns = load_judge(parse_judge_spec(f"{rewards_file}:kind_echo"))
    assert judge_scores(columns, _completions()) == [1.0, 10.0]  # category None where missing
    prompts = load_judge(parse_judge_spec(f"{rewards_file}:prompt_words"))
    assert judge_scores(prompts, _completions()) == [3.0, 1.0]  # the last (user) message


def test_callable_judge_from_an_importable_module(rewards_file, monkeypatch):
    monkeypatch.syspath_prepend(str(rewards_file.parent))
    monkeypatch.delitem(sys.modules, "rewards", raising=False)
    judge = load_judge(parse_judge_spec("rewards:length"))
    assert judge_scores(judge, _completions()) == [4.0, 6.0]


@pytest.mark.parametrize(("function", "message"), [
    ("broken", "raised RuntimeError: model server down"),
    ("too_few", "returned 1 score(s) for 2 completion(s)"),
])
def test_callable_judge_failures_name_the_judge(rewards_file, function, message):
    judge = load_judge(parse_judge_spec(f"{rewards_file}:{function}"))
    with pytest.raises(JudgeError, match=re.escape(f"judge {rewards_file}:{function}: {message}")):
        judge_scores(judge, _completions())


def test_callable_judge_load_errors(rewards_file, tmp_path):
    with pytest.raises(JudgeError, match=r"has no function 'lenght' \(its functions: broken, "
                                         r"kind_echo, length, prompt_words, too_few\)"):
        load_judge(parse_judge_spec(f"{rewards_file}:lenght"))
    with pytest.raises(JudgeError, match="cannot import 'no_such_module_here'"):
        load_judge(parse_judge_spec("no_such_module_here:f"))
    with pytest.raises(JudgeError, match="no file"):
        load_judge(parse_judge_spec(f"{tmp_path / 'absent.py'}:f"))
    bad = tmp_path / "bad.py"
    bad.write_text("raise ValueError('boom')\n", encoding="utf-8")
    with pytest.raises(JudgeError, match="importing .*bad.py raised ValueError: boom"):
        load_judge(parse_judge_spec(f"{bad}:f"))
