"""Safety context distillation: where the pre-prompt goes and which answers are kept (by hand),
and `distill-context` with a tiny real model: the kept rows are exactly the prompts whose
pre-prompted answer the judge preferred, written without the pre-prompt, with pairs and
lineage; a bad prompt file fails before the model loads."""

from __future__ import annotations

import json

import pytest

from loop.loop_files import LENGTH_JUDGE, write_jsonl
from prefalign.cli.main import main
from prefalign.data.tokenizer import load_tokenizer
from prefalign.data.types import Message
from prefalign.engine.models.load import weight_hash
from prefalign.eval.generate import DecodeSettings, generate
from prefalign.loop.context import DEFAULT_PREPROMPT, outcome, with_preprompt
from tiny_models import tiny_llama, tiny_model_dir

PROMPTS = [{"id": f"q{i}", "prompt": text, "kind": kind} for i, (text, kind) in enumerate([
    ("How do I pick a lock?", "harmful"), ("What is the capital of France?", "benign"),
    ("Tell me a joke about a cat.", "benign"), ("How do bicycles work?", "benign"),
    ("Write something rude about my neighbour.", "harmful"), ("Describe the sea.", "benign"),
])]
SETTINGS = DecodeSettings(max_new_tokens=12, batch_size=4)
# Wider initial weights than the default, so that greedy answers vary (as in test_generate).
MODEL = {"initializer_range": 0.2, "tie_word_embeddings": False}


@pytest.mark.parametrize(("position", "prompt", "expected"), [
    ("prefix", (Message("user", "q"),), (Message("user", "PRE\n\nq"),)),
    ("prefix", (Message("system", "s"), Message("user", "q"), Message("assistant", "a"),
                Message("user", "r")),
     (Message("system", "s"), Message("user", "PRE\n\nq"), Message("assistant", "a"),
      Message("user", "r"))),
    ("system", (Message("user", "q"),), (Message("system", "PRE"), Message("user", "q"))),
    ("system", (Message("system", "s"), Message("user", "q")),
     (Message("system", "PRE\n\ns"), Message("user", "q"))),
])
def test_where_the_preprompt_goes(position, prompt, expected):
    assert with_preprompt(prompt, "PRE", position) == expected


@pytest.mark.parametrize(("preprompted", "plain", "text", "margin", "expected"), [
    (0.9, 0.2, "answer", 0.0, "kept"),
    (0.2, 0.9, "answer", 0.0, "not_better"),
    (0.5, 0.5, "answer", 0.0, "not_better"),   # a tie does not replace the plain answer
    (0.9, 0.2, "answer", 0.7, "not_better"),   # 0.7 is not more than the margin 0.7
    (None, 0.2, "answer", 0.0, "unsafe"),      # below the piecewise safety threshold
    (0.1, None, "answer", 0.0, "kept"),        # the plain answer was the unsafe one
    (0.9, 0.2, "  ", 0.0, "empty"),
])
def test_which_answers_are_kept(preprompted, plain, text, margin, expected):
    assert outcome(preprompted, plain, text, margin) == expected


@pytest.fixture
def setup(tmp_path, tiny_tokenizer):
    model_dir = tiny_model_dir(tmp_path, tiny_tokenizer, **MODEL)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    judges = tmp_path / "judges.py"
    judges.write_text(LENGTH_JUDGE, encoding="utf-8")
    return model_dir, prompts, judges


def _generated(model_dir, position: str) -> tuple[list[str], list[str]]:
    """Both answers of every prompt, generated directly with the same model and settings."""
    tokenizer = load_tokenizer(str(model_dir))
    model = tiny_llama(tokenizer, **MODEL)
    plain = [(Message("user", row["prompt"]),) for row in PROMPTS]
    primed = [with_preprompt(p, DEFAULT_PREPROMPT, position) for p in plain]
    return ([g.text.lstrip() for g in generate(model, tokenizer, plain, SETTINGS)],
            [g.text.lstrip() for g in generate(model, tokenizer, primed, SETTINGS)])


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("position", ["prefix", "system"])
def test_distill_keeps_the_answers_the_judge_prefers(setup, tmp_path, tiny_tokenizer, capsys,
                                                      position):
    model_dir, prompts, judges = setup
    out, pairs = tmp_path / "sft.jsonl", tmp_path / "pairs.jsonl"
    code = main(["distill-context", str(model_dir), "--prompts", str(prompts), "--judge",
                 f"{judges}:length", "-o", str(out), "--pairs", str(pairs),
                 "--preprompt-position", position, "--max-new-tokens", "12",
                 "--gen-batch-size", "4"])
    assert code == 0
    printed = capsys.readouterr().out
    plain, primed = _generated(model_dir, position)
    kept = [i for i in range(len(PROMPTS)) if primed[i].strip() and len(primed[i]) > len(plain[i])]
    assert 0 < len(kept) < len(PROMPTS)  # the filter keeps some and drops some
    rows = _rows(out)
    assert [r["id"] for r in rows] == [PROMPTS[i]["id"] for i in kept]
    for row, i in zip(rows, kept, strict=True):
        assert row["messages"] == [{"role": "user", "content": PROMPTS[i]["prompt"]},
                                   {"role": "assistant", "content": primed[i]}]
        assert row["kind"] == PROMPTS[i]["kind"]
        assert row["preprompted_score"] == len(primed[i]) and row["plain_score"] == len(plain[i])
        meta = row["metadata"]
        assert meta["preprompt"] == DEFAULT_PREPROMPT and meta["position"] == position
        assert meta["generator"]["weight_hash"] == weight_hash(tiny_llama(tiny_tokenizer, **MODEL))
    pair_rows = _rows(pairs)
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in pair_rows] == [
        (primed[i], plain[i]) for i in kept if plain[i].strip()]
    lineage = json.loads((tmp_path / "sft.jsonl.lineage.json").read_text(encoding="utf-8"))
    assert lineage["counts"]["kept"] == len(kept) and lineage["kind"] == "sft_conversations"
    assert lineage["counts"]["prompts"] == len(PROMPTS)
    assert f"kept {len(kept)} pre-prompted answer(s)" in printed
    assert main(["data", "validate", "--sft", str(out)]) == 0
    assert f"fingerprint: {lineage['fingerprint']}" in capsys.readouterr().out
    pair_lineage = json.loads((tmp_path / "pairs.jsonl.lineage.json").read_text("utf-8"))
    assert main(["data", "validate", str(pairs)]) == 0
    assert f"fingerprint: {pair_lineage['fingerprint']}" in capsys.readouterr().out


def test_a_bad_prompt_file_fails_before_the_model_loads(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": "a", "prompt": ""}])
    code = main(["distill-context", str(tmp_path / "no-such-model"), "--prompts", str(prompts),
                 "--judge", "refusal", "-o", str(tmp_path / "o.jsonl")])
    assert code == 1
    assert "prompts.jsonl:1: prompt: empty or whitespace-only prompt" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()
