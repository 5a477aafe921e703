"""`prefalign rm eval` and `prefalign rm score` on a tiny trained reward model (and a tiny DPO
run beside it): the files, numbers that agree with each other and with training, refusals."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from prefalign.data.types import DataError
from prefalign.eval.reward import (
    RewardEvalOptions,
    calibration_split,
    load_reward_run,
    run_reward_eval,
)
from prefalign.eval.reward_score import score_file, score_rows
from prefalign.trainers.dpo.train import train
from prefalign.trainers.rm.train import train_rm
from rm_helpers import rm_config
from run_helpers import pair_rows, tiny_config, write_pairs
from tiny_models import tiny_model_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_tokenizer):
    """A finished reward-model run and a finished DPO run on the same tiny model and data."""
    tmp = tmp_path_factory.mktemp("runs")
    model = tiny_model_dir(tmp, tiny_tokenizer)
    rm = train_rm(rm_config(tmp, model, train={"max_steps": 4}))
    dpo = train(tiny_config(tmp, model, train={"max_steps": 2}, data={"eval": []}))
    heldout = write_pairs(tmp / "heldout.jsonl", rows=pair_rows(40)[24:])
    return {"rm": rm.run_dir, "dpo": dpo.run_dir, "heldout": heldout, "rm_result": rm}


@pytest.fixture(scope="module")
def evaluated(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    options = RewardEvalOptions(pairs=(str(runs["heldout"]),), dpo_run=runs["dpo"])
    return out, run_reward_eval(runs["rm"], out, options)


def test_writes_every_file(evaluated):
    out, results = evaluated
    assert {p.name for p in out.iterdir()} == {"eval.json", "pairs.csv", "report.html",
                                               "summary.md"}
    assert json.loads((out / "eval.json").read_text())["format"] == "prefalign-rm-eval/1"
    rows = list(csv.DictReader((out / "pairs.csv").open()))
    assert len(rows) == results["pairs"]["overall"]["n"] == 16
    assert {"chosen_reward", "probability", "dpo_margin", "calibration_role"} <= rows[0].keys()
    summary = (out / "summary.md").read_text()
    assert "Length-balanced accuracy (95% CI)" in summary and "## Calibration" in summary
    assert 'data-plots="5"' in (out / "report.html").read_text()


def test_the_numbers_agree_with_each_other(evaluated):
    _, results = evaluated
    pairs = results["pairs"]
    columns = pairs["per_pair"]
    correct = [c > r for c, r in zip(columns["chosen_reward"], columns["rejected_reward"],
                                     strict=True)]
    assert pairs["overall"]["accuracy"] == pytest.approx(sum(correct) / len(correct))
    for key in ("length_only_accuracy", "length_balanced_accuracy",
                "length_balanced_accuracy_low", "length_balanced_accuracy_high",
                "reward_length_corr"):
        assert key in pairs["overall"]
    assert sum(s["n"] for s in pairs["slices"]["source"].values()) == 16
    assert set(pairs["slices"]["category"]) == {"single-turn"}
    calibration = results["calibration"]
    assert calibration["n_calibration"] == 8 and calibration["n_evaluated"] == 8
    assert columns["calibration_role"].count("calibration") == 8
    assert 0 <= calibration["ece_before"] <= 1 and 0 <= calibration["ece_after"] <= 1
    dpo = results["dpo"]
    assert dpo["overall"]["n"] == 16 and "length_balanced_accuracy" in dpo["overall"]
    same = sum((m > 0) == (d > 0) for m, d in zip(columns["reward_margin"],
                                                  columns["dpo_margin"], strict=True))
    assert dpo["agreement"]["same_ranking"] == pytest.approx(same / 16)


def test_the_training_evaluation_is_reproduced(runs, tmp_path):
    """Scoring the run's own held-out pairs gives the numbers its last evaluation logged."""
    result = runs["rm_result"]
    heldout = json.loads((runs["rm"] / "manifest.json").read_text())["config"]["data"]["eval"]
    results = run_reward_eval(runs["rm"], tmp_path, RewardEvalOptions(pairs=tuple(heldout)))
    overall = results["pairs"]["overall"]
    for key in ("accuracy", "margin", "loss", "chosen_reward", "reward_std"):
        assert overall[key] == pytest.approx(result.final_eval[key], abs=1e-5), key


def test_score_gives_each_reply_the_reward_of_its_pair_side(runs, evaluated, tmp_path):
    out, results = evaluated
    rows = pair_rows(40)[24:28]
    inputs = [{"prompt": row["prompt"], "response": row["chosen"], "keep": i}
              for i, row in enumerate(rows[:2])]
    inputs += [{"messages": [{"role": "user", "content": row["prompt"]},
                             {"role": "assistant", "content": row["rejected"]}]}
               for row in rows[2:]]
    source = write_pairs(tmp_path / "in.jsonl", rows=inputs)
    assert score_file(runs["rm"], source, tmp_path / "out.jsonl") == 4
    scored = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["keep"] for row in scored[:2]] == [0, 1] and "messages" in scored[2]
    columns = results["pairs"]["per_pair"]
    expected = columns["chosen_reward"][:2] + columns["rejected_reward"][2:4]
    torch.testing.assert_close(torch.tensor([row["score"] for row in scored]),
                               torch.tensor(expected), atol=1e-5, rtol=0)
    judge = load_reward_run(runs["rm"])  # in memory, the model loaded once
    assert score_rows(judge, inputs) == pytest.approx([row["score"] for row in scored], abs=1e-6)
    with pytest.raises(DataError, match="<list>:1: response: missing field"):
        score_rows(judge, [inputs[0], {"prompt": "Hi"}])


def test_score_names_every_bad_row_and_writes_nothing(runs, tmp_path):
    rows = [{"prompt": "Hi", "response": "Hello"}, {"prompt": "Hi"},
            {"messages": [{"role": "user", "content": "Hi"}]}, {"prompt": 3, "response": "x"}]
    source = write_pairs(tmp_path / "bad.jsonl", rows=rows)
    with pytest.raises(DataError) as error:
        score_file(runs["rm"], source, tmp_path / "out.jsonl")
    message = str(error.value)
    assert f"{source}:2: response: missing field" in message
    assert f"{source}:3: messages[0].role: the last message must be the assistant's" in message
    assert f"{source}:4: prompt: expected a string, got integer" in message
    assert not (tmp_path / "out.jsonl").exists()


def test_a_dpo_run_is_not_a_reward_model(runs, tmp_path):
    with pytest.raises(ValueError, match="a dpo run, not a reward model"):
        run_reward_eval(runs["dpo"], tmp_path, RewardEvalOptions(pairs=(str(runs["heldout"]),)))
    with pytest.raises(ValueError, match="--dpo .*: a rm run, not a DPO run"):
        run_reward_eval(runs["rm"], tmp_path, RewardEvalOptions(
            pairs=(str(runs["heldout"]),), dpo_run=runs["rm"]))


def test_calibration_split_is_seeded_and_disjoint():
    fit, measured = calibration_split(11, seed=3)
    assert len(fit) == 5 and len(measured) == 6 and not set(fit) & set(measured)
    assert calibration_split(11, seed=3) == (fit, measured) != calibration_split(11, seed=4)
