"""KTO end to end: TRL's unpaired rows validated, `loss.name: kto` trains on the tiny model."""

from __future__ import annotations

import json

import pytest

from prefalign.cli.main import main
from prefalign.data.types import DataError
from prefalign.data.unpaired import load_unpaired
from prefalign.engine.logger import read_metrics
from prefalign.engine.manifest import read_manifest
from prefalign.trainers.dpo.kto import KtoMethod
from prefalign.trainers.dpo.train import train
from prefalign.trainers.loop.batches import epoch_permutation
from run_helpers import pair_rows, tiny_config, write_pairs
from tiny_models import tiny_model_dir


def unpaired_rows(n: int = 24) -> list[dict]:
    """Each pair's chosen reply labelled desirable, its rejected one undesirable."""
    rows = []
    for pair in pair_rows(n // 2):
        rows.append({"prompt": pair["prompt"], "completion": pair["chosen"], "label": True})
        rows.append({"prompt": pair["prompt"], "completion": pair["rejected"], "label": False})
    return rows


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer)


def kto_config(tmp_path, model_dir, **sections):
    rows = unpaired_rows(36)
    train_file = write_pairs(tmp_path / "data" / "kto-train.jsonl", rows=rows[:24])
    eval_file = write_pairs(tmp_path / "data" / "kto-eval.jsonl", rows=rows[24:])
    params = sections.pop("params", {})
    return tiny_config(tmp_path, model_dir, loss={"name": "kto", "params": params},
                       data={"train": [str(train_file)], "eval": [str(eval_file)]}, **sections)


@pytest.mark.parametrize(("row", "field", "message"), [
    ({"prompt": "p", "completion": "c", "label": "yes"}, "label",
     "expected true or false, got string 'yes'"),
    ({"prompt": "p", "label": True}, "completion", "missing field"),
    ({"prompt": "p", "completion": "  ", "label": False}, "completion",
     "empty or whitespace-only response"),
    ({"prompt": [{"role": "assistant", "content": "x"}], "completion": "c", "label": True},
     "prompt", "the prompt must end with a user message"),
])
def test_every_bad_row_is_named(tmp_path, row, field, message):
    path = write_pairs(tmp_path / "bad.jsonl", rows=[{"prompt": "ok", "completion": "fine",
                                                      "label": True}, row])
    with pytest.raises(DataError) as error:
        load_unpaired([path])
    assert f"{path}:2: {field}: {message}" in str(error.value)


def test_conflicting_labels_are_an_error_and_duplicates_are_dropped(tmp_path):
    same = {"prompt": "p", "completion": "c", "label": True}
    result = load_unpaired([write_pairs(tmp_path / "dup.jsonl", rows=[same, same])])
    assert len(result.examples) == 1 and "1 exact duplicate" in result.warnings[0]
    path = write_pairs(tmp_path / "both.jsonl", rows=[same, {**same, "label": False}])
    with pytest.raises(DataError, match=r"both.jsonl:2: label: .* labelled True at .*:1"):
        load_unpaired([path])


def test_step_one_loss_is_the_weighted_half_at_policy_equal_reference(tmp_path, model_dir):
    """At step 1 the policy is its reference: r = 0 and z0 = max(0, 0) = 0, so each example's
    loss is λ·(1 − σ(0)) = λ/2: 1.0 for desirable (λ_D = 2), 0.25 for undesirable (λ_U = 0.5).
    The logged loss is the mean over the first batch's labels."""
    config = kto_config(tmp_path, model_dir, params={"desirable_weight": 2.0,
                                                     "undesirable_weight": 0.5},
                        train={"max_steps": 1})
    result = train(config)
    method = KtoMethod(config)
    from prefalign.data.tokenizer import load_tokenizer

    split = method.prepare_splits(config, load_tokenizer(str(model_dir)), None)["train"]
    first = epoch_permutation(len(split), config.run.seed, 0)[: config.train.batch_size]
    expected = sum(1.0 if split.desirable[i] else 0.25 for i in first.tolist()) / len(first)
    logged = [m for m in read_metrics(result.run_dir) if m["split"] == "train"][0]
    assert logged["loss"] == pytest.approx(expected, abs=1e-6)
    assert logged["kl"] == 0.0
    assert read_manifest(result.run_dir)["method"] == "kto"


def test_training_separates_desirable_from_undesirable(tmp_path, model_dir):
    result = train(kto_config(tmp_path, model_dir, train={"max_steps": 6, "eval_every": 6}))
    assert result.outcome == "completed"
    last = [m for m in read_metrics(result.run_dir) if m["split"] == "train"][-1]
    assert last["rewards/desirable"] > last["rewards/undesirable"]
    assert 0 <= result.final_eval["label_accuracy"] <= 1


def test_a_precomputed_reference_gives_the_frozen_copys_losses(tmp_path, model_dir):
    runs = [train(kto_config(tmp_path, model_dir, run={"name": strategy},
                             reference={"strategy": strategy}, train={"max_steps": 3}))
            for strategy in ("frozen_copy", "precomputed")]
    frozen, precomputed = ([m["loss"] for m in read_metrics(r.run_dir) if m["split"] == "train"]
                           for r in runs)
    assert precomputed == pytest.approx(frozen, abs=1e-6)


def test_cli_trains_kto_from_an_unpaired_file(tmp_path, model_dir):
    config = kto_config(tmp_path, model_dir)
    from prefalign.cli.train import config_yaml

    path = tmp_path / "kto.yaml"
    path.write_text(config_yaml(config))
    assert main(["train", "-c", str(path), "train.max_steps=1", "data.eval=[]"]) == 0
    manifest = json.loads((tmp_path / "runs" / "tiny" / "manifest.json").read_text())
    assert manifest["loss"]["name"] == "kto" and manifest["outcome"] == "completed"
