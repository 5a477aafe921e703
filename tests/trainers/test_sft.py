"""`prefalign sft` on a tiny real model: the loss, its invariance to how a step is split, exact
resume, final/ as a transformers model and as a DPO run's starting point, refused config."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from prefalign.cli.main import main
from prefalign.config import ConfigError
from prefalign.data.tokenizer import load_tokenizer
from prefalign.engine.manifest import read_manifest
from prefalign.trainers.dpo.train import train
from prefalign.trainers.sft.data import make_sft_batch, prepare_sft_splits
from prefalign.trainers.sft.method import SftMethod
from prefalign.trainers.sft.train import train_sft
from run_helpers import (
    SMALL_LR,
    final_weights,
    logged_losses,
    max_weight_difference,
    sft_config,
    tiny_config,
)
from tiny_models import tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer)


def test_step_one_loss_is_the_token_mean_nll_of_the_assistant_tokens(tmp_path, model_dir):
    """The first logged loss equals −Σ log π(labelled tokens) / their count, computed here from
    the untrained model's own full logits over the same first batch."""
    config = sft_config(tmp_path, model_dir, train={"max_steps": 1, "eval_every": 0})
    tokenizer = load_tokenizer(str(model_dir))
    split = prepare_sft_splits(config, tokenizer)["train"]
    from prefalign.trainers.loop.batches import epoch_permutation

    first = epoch_permutation(len(split), config.run.seed, 0)[: config.train.batch_size]
    batch = make_sft_batch(split, first, tokenizer.pad_token_id)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits.float()  # (B, T, V)
    logps = torch.log_softmax(logits[:, :-1], dim=-1)
    targets = batch["labels"][:, 1:]
    scored = targets != -100
    nll = -logps.gather(2, targets.clamp(min=0)[..., None]).squeeze(2)[scored]
    result = train_sft(config)
    assert result.outcome == "completed"
    assert logged_losses(result.run_dir)[0] == pytest.approx(nll.mean().item(), abs=1e-5)


def test_one_batch_of_8_equals_4_micro_batches_of_2(tmp_path, model_dir):
    """Token-weighted reduction: the same step however it is split into micro-batches."""
    whole = train_sft(sft_config(tmp_path, model_dir, run={"name": "whole"}, optim=SMALL_LR,
                                 train={"batch_size": 8, "grad_accum": 1, "max_steps": 3}))
    split = train_sft(sft_config(tmp_path, model_dir, run={"name": "split"}, optim=SMALL_LR,
                                 train={"batch_size": 2, "grad_accum": 4, "max_steps": 3}))
    assert logged_losses(whole.run_dir) == pytest.approx(logged_losses(split.run_dir), abs=1e-6)
    assert max_weight_difference(final_weights(whole.run_dir),
                                 final_weights(split.run_dir)) < 1e-6


def test_packed_and_padded_runs_agree(tmp_path, model_dir):
    runs = [train_sft(sft_config(tmp_path, model_dir, run={"name": scorer}, optim=SMALL_LR,
                                 train={"scorer": scorer, "max_steps": 3}))
            for scorer in ("packed", "padded")]
    packed, padded = (logged_losses(r.run_dir) for r in runs)
    assert packed == pytest.approx(padded, abs=1e-5)


def test_loss_on_last_scores_fewer_tokens(tmp_path, model_dir):
    tokenizer = load_tokenizer(str(model_dir))
    counts = {}
    for loss_on in ("all", "last"):
        config = sft_config(tmp_path, model_dir, sft={"loss_on": loss_on})
        counts[loss_on] = prepare_sft_splits(config, tokenizer)["train"].counts["target_tokens"]
    assert 0 < counts["last"] < counts["all"]


def test_resume_gives_the_uninterrupted_run(tmp_path, model_dir):
    sections = {"optim": SMALL_LR}
    whole = train_sft(sft_config(tmp_path, model_dir, run={"name": "whole"},
                                 train={"max_steps": 4}, **sections))
    train_sft(sft_config(tmp_path, model_dir, run={"name": "cut"},
                         train={"max_steps": 2, "save_every": 2}, **sections))
    resumed = train_sft(sft_config(tmp_path, model_dir, run={"name": "cut"},
                                   train={"max_steps": 4}, **sections), resume=True)
    assert logged_losses(resumed.run_dir) == pytest.approx(logged_losses(whole.run_dir), abs=0)
    assert max_weight_difference(final_weights(whole.run_dir),
                                 final_weights(resumed.run_dir)) == 0


def test_final_loads_in_transformers_and_starts_a_dpo_run(tmp_path, model_dir):
    result = train_sft(sft_config(tmp_path, model_dir, train={"max_steps": 2, "eval_every": 2}))
    manifest = read_manifest(result.run_dir)
    assert manifest["method"] == "sft" and manifest["outcome"] == "completed"
    evals = [json.loads(line) for line in
             (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    held_out = [line for line in evals if line["split"] == "eval"][-1]
    assert held_out["perplexity"] == pytest.approx(math.exp(held_out["loss"]), rel=1e-9)
    final = result.run_dir / "final"
    model = AutoModelForCausalLM.from_pretrained(str(final))
    loaded, saved = model.state_dict(), final_weights(result.run_dir)
    assert saved and all(torch.equal(loaded[name], saved[name]) for name in saved)
    dpo = train(tiny_config(tmp_path, final, run={"name": "dpo-from-sft"},
                            train={"max_steps": 1}))
    assert dpo.outcome == "completed"
    assert read_manifest(dpo.run_dir)["model"]["source"].endswith("final")


@pytest.mark.parametrize(("section", "values", "message"), [
    ("loss", {"name": "ipo"}, "sft .* has no loss section"),
    ("reference", {"strategy": "precomputed"}, "sft has no reference model"),
    ("data", {"length_balance": True}, "data.length_balance"),
])
def test_keys_sft_does_not_use_are_refused(tmp_path, model_dir, section, values, message):
    with pytest.raises(ConfigError, match=message):
        SftMethod(sft_config(tmp_path, model_dir, **{section: values}))


def test_cli_sft_trains_and_refuses_a_dpo_config_with_an_sft_section(tmp_path, model_dir,
                                                                     capsys):
    config = sft_config(tmp_path, model_dir, train={"max_steps": 1})
    path = tmp_path / "sft.yaml"
    from prefalign.cli.train import config_yaml

    path.write_text(config_yaml(config))
    assert main(["sft", "-c", str(path), "train.eval_every=0"]) == 0
    assert (tmp_path / "runs" / "tiny-sft" / "final" / "config.json").is_file()
    with pytest.raises(ConfigError, match="the sft section is for `prefalign sft`"):
        train(tiny_config(tmp_path, model_dir, sft={"loss_on": "last"}))
