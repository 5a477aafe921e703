"""Judges that run models: `rm:` (a tiny real LlamaForSequenceClassification saved as a run's
final/) against transformers' own forward on each rendered conversation alone, and `implicit:`
(a tiny DPO run) against β times the probe's policy and reference log-probs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from prefalign.data.template import end_of_turn_token_id, render_full
from prefalign.data.types import Message
from prefalign.engine.models.load import weight_hash
from prefalign.eval.probe import probe
from prefalign.judges.base import Completions, JudgeError, judge_scores
from prefalign.judges.spec import load_judge, parse_judge_spec
from prefalign.trainers.dpo.train import train
from run_helpers import tiny_config
from tiny_models import tiny_model_dir

SEA = (Message("user", "Tell me about the sea, please."),)
CAT = (Message("system", "You are polite."), Message("user", "A cat joke?"))
TEXTS = ["Thank you for asking. Here is the sea.", "No.", "The sea is big and blue and wide.",
         "Why did the cat sit on the computer?"]
PROMPTS = [SEA, SEA, SEA, CAT]


def _completions() -> Completions:
    return Completions(PROMPTS, TEXTS, [{} for _ in TEXTS])


def _reward_model(tokenizer, *, pad: bool = True, labels: int = 1):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         num_labels=labels,
                         pad_token_id=tokenizer.pad_token_id if pad else None)
    return LlamaForSequenceClassification(config).eval()


def _save_rm(tmp_path, tokenizer, **kwargs):
    run_dir = tmp_path / "rm-run"
    model = _reward_model(tokenizer, **kwargs)
    model.save_pretrained(str(run_dir / "final"), safe_serialization=True)
    tokenizer.save_pretrained(str(run_dir / "final"))
    return run_dir, model


def _alone(model, tokenizer, prompt, text) -> float:
    """The conversation rendered whole, cut after the end-of-turn token, scored unpadded."""
    ids = tokenizer(render_full(tokenizer, prompt, text), add_special_tokens=False)["input_ids"]
    eot = end_of_turn_token_id(tokenizer)
    ids = ids[: len(ids) - ids[::-1].index(eot)]
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


@pytest.mark.parametrize("pad", [True, False])
def test_reward_model_scores_each_conversation_as_transformers_does(tmp_path, tiny_tokenizer, pad):
    run_dir, model = _save_rm(tmp_path, tiny_tokenizer, pad=pad)
    judge = load_judge(parse_judge_spec(f"rm:{run_dir}"))
    assert judge.id == f"rm:{run_dir}" and judge.hash == weight_hash(model)
    scores = judge_scores(judge, _completions())
    expected = [_alone(model, tiny_tokenizer, p, t) for p, t in zip(PROMPTS, TEXTS, strict=True)]
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(scores)) == len(scores)  # the scores differ, so the order is tested


def test_reward_model_errors_name_the_judge(tmp_path, tiny_tokenizer):
    run_dir, _ = _save_rm(tmp_path, tiny_tokenizer, labels=2)
    with pytest.raises(JudgeError, match=f"judge rm:{run_dir}: .* has 2 labels"):
        load_judge(parse_judge_spec(f"rm:{run_dir}"))
    for weights in (run_dir / "final").glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(JudgeError, match=f"judge rm:{run_dir}: .* holds only pickle weights"):
        load_judge(parse_judge_spec(f"rm:{run_dir}"))


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, tiny_tokenizer):
    """A finished 3-step DPO run (β = 0.1) with a high lr, so the policy left its reference."""
    tmp_path = tmp_path_factory.mktemp("implicit")
    config = tiny_config(tmp_path, tiny_model_dir(tmp_path, tiny_tokenizer),
                         optim={"lr": 5e-2}, train={"max_steps": 3, "eval_every": 0})
    result = train(config)
    assert result.outcome == "completed"
    return result.run_dir


def test_implicit_reward_is_beta_times_the_log_ratio(dpo_run):
    """β·[log π(y|x) − log π_ref(y|x)] with the probe's (unpacked, one response at a time)
    log-probs; three completions of one prompt check the pairing of an odd one out."""
    judge = load_judge(parse_judge_spec(f"implicit:{dpo_run}"))
    scores = judge_scores(judge, _completions())
    sea = probe(dpo_run, SEA[0].content, TEXTS[:3])
    cat = probe(dpo_run, CAT[1].content, TEXTS[3:], system=CAT[0].content)
    expected = [0.1 * r.change for r in (*sea.responses, *cat.responses)]
    assert scores == pytest.approx(expected, abs=1e-5)
    assert max(abs(s) for s in scores) > 1e-3  # training moved the policy
    assert judge.id == f"implicit:{dpo_run}" and len(judge.hash) == 64


def test_implicit_judge_refuses_a_reference_free_run(dpo_run, tmp_path):
    run_dir = tmp_path / "simpo-run"
    shutil.copytree(dpo_run / "final", run_dir / "final")
    manifest = json.loads((dpo_run / "manifest.json").read_text(encoding="utf-8"))
    manifest["config"]["loss"] = {"name": "simpo", "params": {}}
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(JudgeError, match="loss 'simpo' has no reference model"):
        load_judge(parse_judge_spec(f"implicit:{run_dir}"))
    with pytest.raises(JudgeError, match="not a run directory"):
        load_judge(parse_judge_spec(f"implicit:{tmp_path}"))
