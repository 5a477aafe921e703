"""`prefalign rm train`: a reward model on the shared loop — run records, final/ as an
AutoModelForSequenceClassification that scores the same, resume, the margin field, refusals."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import prefalign.trainers.loop.loop as loop
from prefalign.config import ConfigError
from prefalign.data.types import DataError
from prefalign.engine.forward.reward import RewardPairScorer
from prefalign.engine.manifest import read_manifest
from prefalign.engine.models.reward import load_reward_final
from prefalign.engine.pair_splits import make_batch, model_inputs
from prefalign.trainers.dpo.method import DpoMethod
from prefalign.trainers.rm.method import RmMethod
from prefalign.trainers.rm.train import train_rm
from rm_helpers import rm_config
from run_helpers import final_weights, logged_losses, max_weight_difference, tiny_config
from tiny_models import tiny_model_dir

TOLERANCE = 1e-5
LORA = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.1, "merge_on_save": True}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer)


def heldout_rewards(model, method, config, tokenizer):
    """Rewards of the held-out pairs: the packed forward and transformers on each sequence."""
    split = method.prepare_splits(config, tokenizer, None)["eval"]
    batch = make_batch(split, range(len(split)), tokenizer.pad_token_id)
    with torch.no_grad():
        packed = RewardPairScorer(model)(**model_inputs(batch))
        alone = [[model(input_ids=torch.tensor([pair.input_ids(side)])).logits[0, 0].item()
                  for pair in split.tokenized] for side in ("chosen", "rejected")]
    return packed, torch.tensor(alone[0]), torch.tensor(alone[1])


@pytest.mark.parametrize("lora", [{}, LORA], ids=["full", "lora"])
def test_final_loads_as_sequence_classification_and_scores_the_same(tmp_path, model_dir,
                                                                    tiny_tokenizer, lora):
    """final/ through AutoModelForSequenceClassification gives the rewards the run's last
    evaluation measured (its mean margin and loss), and the packed forward gives them too."""
    config = rm_config(tmp_path, model_dir, lora=lora,
                       train={"max_steps": 4, "eval_every": 2, "save_every": 2})
    result = train_rm(config)
    assert result.outcome == "completed" and result.steps == 4
    final = load_reward_final(result.run_dir / "final")
    assert type(final).__name__ == "LlamaForSequenceClassification"
    assert final.config.num_labels == 1 and final.config.pad_token_id == tiny_tokenizer.pad_token_id
    packed, chosen, rejected = heldout_rewards(final, RmMethod(config), config, tiny_tokenizer)
    torch.testing.assert_close(packed.chosen, chosen, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(packed.rejected, rejected, atol=TOLERANCE, rtol=0)
    margin = (chosen - rejected).double().mean().item()
    assert result.final_eval["margin"] == pytest.approx(margin, abs=TOLERANCE)
    loss = F.softplus(-(chosen - rejected)).double().mean().item()
    assert result.final_eval["loss"] == pytest.approx(loss, abs=TOLERANCE)
    if lora:
        assert (result.run_dir / "final" / "adapter" / "adapter_config.json").is_file()


def test_a_run_records_what_it_trained(tmp_path, model_dir):
    config = rm_config(tmp_path, model_dir, train={"max_steps": 6, "eval_every": 3})
    result = train_rm(config)
    manifest = read_manifest(result.run_dir)
    assert manifest["method"] == "rm" and manifest["outcome"] == "completed"
    assert manifest["loss"] == {"name": "bradley_terry",
                                "params": {"margin": False, "centering": 0.0}}
    assert manifest["reward_model"]["head"] == "score"
    losses = logged_losses(result.run_dir)
    assert len(losses) == 6 and losses[-1] < losses[0] < 1.5  # it learns the tiny preference
    for key in ("accuracy", "length_only_accuracy", "length_balanced_accuracy",
                "length_balanced_accuracy_low", "reward_length_corr", "reward_std"):
        assert key in result.final_eval
    assert len(logged_losses(result.run_dir, "eval")) == 2


@pytest.mark.parametrize("lora", [{}, LORA], ids=["full", "lora"])
def test_an_interrupted_run_resumed_ends_where_an_uninterrupted_one_does(
    tmp_path, tiny_tokenizer, monkeypatch, lora
):
    """Dropout, warm-up, a second epoch and per-pair margins: a crash at step 5 resumes from
    the step-4 checkpoint (head, decoder or adapter, optimiser, RNG, data position)."""
    model_dir = tiny_model_dir(tmp_path, tiny_tokenizer, attention_dropout=0.1)
    sections = dict(optim={"lr": 1e-3, "warmup_steps": 2, "schedule": "linear"},
                    train={"batch_size": 4, "grad_accum": 2, "max_steps": 6, "save_every": 2,
                           "eval_every": 3}, lora=lora, rm={"margin": True, "centering": 0.01})
    margins = [0.5 * (i % 3) for i in range(24)]
    straight = train_rm(rm_config(tmp_path, model_dir, margins=margins,
                                  run={"name": "straight"}, **sections))
    config = rm_config(tmp_path, model_dir, margins=margins, run={"name": "crashed"}, **sections)
    real_step = loop._one_step

    def crash_at_step_5(run, position, progress):
        if position.global_step == 4:
            raise RuntimeError("simulated crash")
        return real_step(run, position, progress)

    monkeypatch.setattr(loop, "_one_step", crash_at_step_5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_rm(config)
    monkeypatch.setattr(loop, "_one_step", real_step)
    resumed = train_rm(config, resume=True)
    assert resumed.outcome == "completed" and resumed.steps == 6
    assert logged_losses(resumed.run_dir) == logged_losses(straight.run_dir)
    assert logged_losses(resumed.run_dir, "eval") == logged_losses(straight.run_dir, "eval")
    assert max_weight_difference(final_weights(straight.run_dir),
                                 final_weights(resumed.run_dir)) < 1e-6
    assert [r["from_step"] for r in read_manifest(resumed.run_dir)["resumes"]] == [4]


def test_the_margin_field_enters_the_loss(tmp_path, model_dir, tiny_tokenizer):
    """With rm.margin the per-pair loss is softplus(−(r⁺ − r⁻ − m)), m read from each row (a
    row without the field takes m = 0, and the split says so)."""
    margins = [float(i % 4) for i in range(23)] + [None]
    config = rm_config(tmp_path, model_dir, margins=margins, rm={"margin": True})
    method = RmMethod(config)
    loaded = method.load_model(config)
    splits = method.prepare_splits(config, loaded.tokenizer, None)
    assert any("1 of 24 pairs have no 'margin'" in w for w in splits["train"].warnings)
    batch = make_batch(splits["train"], range(24), tiny_tokenizer.pad_token_id)
    run = SimpleNamespace(config=config)
    with torch.no_grad():
        losses, columns = method.forward(run, method.build_scorer(loaded.model, config), batch,
                                         "train")
    expected_margins = torch.tensor(
        [float(pair.provenance.meta("margin") or 0) for pair in splits["train"].pairs])
    difference = columns["chosen_rewards"] - columns["rejected_rewards"]
    torch.testing.assert_close(losses, F.softplus(-(difference - expected_margins)))
    assert expected_margins.abs().sum() > 0
    assert method.identity_loss() is None
    assert RmMethod(rm_config(tmp_path, model_dir)).identity_loss() == pytest.approx(math.log(2))


@pytest.mark.parametrize("margin, shown", [("high", "expected a number, got string 'high'"),
                                           ([1, 2], "expected a number, got array"),
                                           (True, "expected a number, got boolean"),
                                           (None, "expected a number, got null")])
def test_a_margin_that_is_not_a_number_names_file_and_line(tmp_path, model_dir, margin, shown):
    rows = [1.0] * 24
    config = rm_config(tmp_path, model_dir, margins=rows, rm={"margin": True})
    path = config.data.train[0]
    lines = open(path, encoding="utf-8").read().splitlines()
    record = json.loads(lines[6])
    record["margin"] = margin
    lines[6] = json.dumps(record)
    open(path, "w", encoding="utf-8").write("\n".join(lines) + "\n")
    with pytest.raises(DataError) as error:
        train_rm(config)
    assert f"{path}:7: margin: {shown}" in str(error.value)
    assert not (tmp_path / "runs" / "tiny-rm" / "final").exists()


def test_sections_a_reward_model_does_not_use_are_refused(tmp_path, model_dir):
    for sections, match in ((dict(loss={"name": "ipo"}), "loss: a reward model"),
                            (dict(reference={"strategy": "precomputed"}), "reference:"),
                            (dict(sft={"loss_on": "last"}), "sft:"),
                            (dict(lora={"enabled": True}), "lora.merge_on_save")):
        with pytest.raises(ConfigError, match=match):
            RmMethod(rm_config(tmp_path, model_dir, **sections))
    with pytest.raises(ConfigError, match="rm: the rm section is for"):
        DpoMethod(tiny_config(tmp_path, model_dir, rm={"centering": 0.01}))


def test_early_stopping_on_a_held_out_reward_metric(tmp_path, model_dir):
    """The tiny preference is learnt within a few steps: held-out accuracy reaches 1.0, cannot
    improve on it, and the run stops after `patience` evaluations without improvement."""
    config = rm_config(tmp_path, model_dir, train={
        "max_steps": 12, "eval_every": 1, "early_stopping_metric": "eval/accuracy",
        "early_stopping_patience": 2})
    result = train_rm(config)
    assert result.outcome == "early_stopped" and result.steps < 12
    assert result.best_step is not None and result.steps == result.best_step + 2
    assert len(logged_losses(result.run_dir, "eval")) == result.steps


def test_margins_are_part_of_the_training_fingerprint(tmp_path, model_dir, tiny_tokenizer):
    """Other margins on the same pairs are other training data: resuming onto them is refused."""
    def fingerprint(margins, margin_on=True):
        config = rm_config(tmp_path, model_dir, margins=margins, rm={"margin": margin_on})
        return RmMethod(config).prepare_splits(config, tiny_tokenizer, None)["train"].fingerprint

    ones, twos = fingerprint([1.0] * 24), fingerprint([2.0] * 24)
    assert len({ones, twos, fingerprint([1.0] * 24, margin_on=False)}) == 3
    assert fingerprint([1.0] * 24) == ones
